"""Shipped, updatable reference lists (anonymiser ranges, risky destinations) turned into portable rule parameters."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from insight_mcp.agents.security.model import ParamValue, RuleParameter

MAX_PREFIXES = 65_536


def read_lines(path: Path) -> list[str]:
    """Non-empty lines without comments."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        item = line.split("#", 1)[0].strip()
        if item:
            out.append(item)
    return out


def ipv4_prefix24(items: list[str], source: str) -> list[str]:
    """IPs stay whole; IPv4 networks become their /24 prefixes `a.b.c`, so SQL can match with split_part."""
    out: set[str] = set()
    for item in items:
        try:
            net = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{source}: {item!r} is not an IP address or CIDR range") from None
        if net.version != 4:
            continue
        if net.prefixlen == 32:
            out.add(str(net.network_address))
        elif net.prefixlen >= 24:
            out.add(str(net.network_address).rsplit(".", 1)[0])
        else:
            for sub in net.subnets(new_prefix=24):
                out.add(str(sub.network_address).rsplit(".", 1)[0])
                if len(out) > MAX_PREFIXES:
                    raise ValueError(f"{source}: {item} expands past {MAX_PREFIXES} /24 prefixes")
    return sorted(out)


def domain_suffix_regex(items: list[str], source: str) -> str:
    """One RE2 regex matching any listed domain or its subdomains."""
    domains = []
    for item in items:
        domain = item.lower().lstrip("*.").rstrip(".")
        if not re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)+", domain):
            raise ValueError(f"{source}: {item!r} is not a domain name")
        domains.append(re.escape(domain))
    return "(^|\\.)(" + "|".join(sorted(set(domains))) + ")$" if domains else "^$NEVER"


def resolve_parameter(param: RuleParameter, folder: Path, source: str) -> ParamValue:
    """The value a parameter binds to: its default, or its file expanded."""
    if param.from_file is None:
        assert param.default is not None
        return param.default
    path = folder / param.from_file
    if not path.is_file():
        raise ValueError(f"{source}: parameter file {param.from_file} not found beside the rule")
    items = read_lines(path)
    if param.expand == "ipv4_prefix24":
        return ipv4_prefix24(items, param.from_file)
    if param.expand == "domain_suffix_regex":
        return domain_suffix_regex(items, param.from_file)
    return items
