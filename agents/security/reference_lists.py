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


_PROVIDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _ranges(items: list[str], source: str) -> list[tuple[str, str]]:
    """Each line's address or range, and its provider: the name after it, else the range itself."""
    out = []
    for item in items:
        parts = item.split()
        if len(parts) > 2 or (len(parts) == 2 and not _PROVIDER.fullmatch(parts[1])):
            raise ValueError(f"{source}: {item!r} must be an address or range, optionally followed by one provider "
                             "name (letters, digits, '.', '_' or '-')")
        out.append((parts[0], parts[1] if len(parts) == 2 else parts[0]))
    return out


def _prefixes(item: str, source: str, budget: int) -> list[str]:
    """An IPv4 address whole, or a range as its /24 prefixes `a.b.c`; IPv6 gives none."""
    try:
        net = ipaddress.ip_network(item, strict=False)
    except ValueError:
        raise ValueError(f"{source}: {item!r} is not an IP address or CIDR range") from None
    if net.version != 4:
        return []
    if net.prefixlen == 32:
        return [str(net.network_address)]
    if net.prefixlen >= 24:
        return [str(net.network_address).rsplit(".", 1)[0]]
    if net.num_addresses // 256 > budget:
        raise ValueError(f"{source}: {item} expands past {MAX_PREFIXES} /24 prefixes")
    return [str(sub.network_address).rsplit(".", 1)[0] for sub in net.subnets(new_prefix=24)]


def ipv4_prefix24(items: list[str], source: str) -> list[str]:
    """IPs stay whole; IPv4 networks become their /24 prefixes `a.b.c`, so SQL can match with split_part."""
    return sorted(ipv4_prefix24_provider_map(items, source))


def ipv4_prefix24_provider_map(items: list[str], source: str) -> dict[str, str]:
    """Each address or /24 prefix and the provider it belongs to; the first line naming a prefix wins."""
    out: dict[str, str] = {}
    for item, provider in _ranges(items, source):
        for prefix in _prefixes(item, source, MAX_PREFIXES - len(out)):
            out.setdefault(prefix, provider)
    # An address inside a listed /24 is matched by the /24: dropping it leaves every IP one entry, and one provider.
    return {k: v for k, v in out.items() if k.count(".") < 3 or k.rsplit(".", 1)[0] not in out}


def ipv4_prefix24_provider(items: list[str], source: str) -> list[str]:
    """`prefix=provider` for each address and /24 prefix: SQL splits them into a table to name an IP's provider."""
    return [f"{prefix}={provider}" for prefix, provider in sorted(ipv4_prefix24_provider_map(items, source).items())]


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
    if param.expand == "ipv4_prefix24_provider":
        return ipv4_prefix24_provider(items, param.from_file)
    if param.expand == "domain_suffix_regex":
        return domain_suffix_regex(items, param.from_file)
    return items
