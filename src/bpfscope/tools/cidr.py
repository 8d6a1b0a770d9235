"""Address prefixes as the network tools' BPF maps key them: `struct cidr {u32 prefixlen; u8 addr[16]}`,
IPv4 mapped into IPv6 (::ffff:a.b.c.d, prefix 96 + n), so one LPM trie holds both families."""

from __future__ import annotations

import ipaddress
from typing import Any, Union

__all__ = ["Network", "cidr_key", "source_name"]

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

_V4_MAPPED = ipaddress.IPv6Address("::ffff:0:0").packed[:12]


def cidr_key(network: Network) -> dict[str, Any]:
    """struct cidr for a network: IPv4 as IPv4-mapped IPv6, so one trie holds both families."""
    if isinstance(network, ipaddress.IPv4Network):
        return {"prefixlen": 96 + network.prefixlen, "addr": tuple(_V4_MAPPED + network.network_address.packed)}
    return {"prefixlen": network.prefixlen, "addr": tuple(network.network_address.packed)}


def source_name(raw_key: bytes) -> str:
    """A sources key as people write it: 192.0.2.1 for an IPv4 host, 2001:db8::/64 for IPv6."""
    prefixlen = int.from_bytes(raw_key[:4], "little")
    addr = raw_key[4:20]
    if prefixlen >= 96 and addr[:12] == _V4_MAPPED:
        network: Network = ipaddress.IPv4Network((addr[12:], prefixlen - 96))
    else:
        network = ipaddress.IPv6Network((addr, prefixlen))
    return str(network.network_address) if network.prefixlen == network.max_prefixlen else str(network)
