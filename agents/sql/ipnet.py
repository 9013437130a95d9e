"""IP and CIDR filters written as portable Databricks SQL, so they run the same on DuckDB and on a warehouse."""

from __future__ import annotations

import functools
import ipaddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=64)
def parse_networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    """Configured CIDR lists, parsed once however many rows and findings are checked against them."""
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def in_networks(value: str, networks: tuple[Network, ...]) -> bool:
    """Whether an address string falls in any of the networks; not an address means no."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return False
    return any(address in net for net in networks)


def ipv4_to_int_sql(column: str) -> str:
    """A Databricks SQL expression giving an IPv4 address column as a 32-bit integer (NULL when not IPv4)."""
    parts = [f"try_cast(split_part({column}, '.', {i}) AS BIGINT)" for i in range(1, 5)]
    return f"({parts[0]} * 16777216 + {parts[1]} * 65536 + {parts[2]} * 256 + {parts[3]})"


def ip_filter_sql(column: str, value: str, param: str) -> tuple[str, dict[str, object]]:
    """A predicate matching one address or a CIDR range; raises ValueError with the accepted forms."""
    try:
        network = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or CIDR range (e.g. 203.0.113.7 or 10.0.0.0/8)") from None
    if network.num_addresses == 1:
        return f"{column} = :{param}", {param: str(network.network_address)}
    if network.version == 6:
        raise ValueError("IPv6 ranges are not supported as a filter yet; pass one exact IPv6 address")
    low, high = int(network.network_address), int(network.broadcast_address)
    expr = ipv4_to_int_sql(column)
    return f"{expr} BETWEEN :{param}_lo AND :{param}_hi", {f"{param}_lo": low, f"{param}_hi": high}
