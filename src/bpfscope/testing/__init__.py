"""Test helpers: a veth pair in a fresh network namespace, raw frame injection, packet builders.

The pytest fixtures live in `bpfscope.testing.plugin`; importing this package does not need pytest.
"""

from __future__ import annotations

from .netns import VethPair, send_frames
from .packets import (
    BROADCAST_MAC,
    EtherType,
    IpProto,
    TcpFlags,
    arp_frame,
    arp_request,
    ethernet,
    icmp_echo,
    icmp_frame,
    icmpv6_echo,
    internet_checksum,
    ipv4,
    ipv6,
    ipv6_udp_frame,
    tcp,
    tcp_frame,
    udp,
    udp_frame,
)

__all__ = [
    "BROADCAST_MAC",
    "EtherType",
    "IpProto",
    "TcpFlags",
    "VethPair",
    "arp_frame",
    "arp_request",
    "ethernet",
    "icmp_echo",
    "icmp_frame",
    "icmpv6_echo",
    "internet_checksum",
    "ipv4",
    "ipv6",
    "ipv6_udp_frame",
    "send_frames",
    "tcp",
    "tcp_frame",
    "udp",
    "udp_frame",
]
