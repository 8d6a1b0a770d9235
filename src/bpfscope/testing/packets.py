"""Ethernet frames built byte by byte, with correct checksums and no dependencies.

Tests craft exactly the packets a BPF program must parse (VLAN tags, fragments, ARP, IPv6) and send them
with `send_frames`; the kernel accepts them because every checksum is right. MACs are "aa:bb:cc:dd:ee:ff"
strings, IP addresses strings that `ipaddress` understands.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from enum import IntEnum, IntFlag

__all__ = [
    "BROADCAST_MAC",
    "EtherType",
    "IpProto",
    "TcpFlags",
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
    "tcp",
    "tcp_frame",
    "udp",
    "udp_frame",
]

BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"

_MAC = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}")


class EtherType(IntEnum):
    """ETH_P_* from include/uapi/linux/if_ether.h."""

    IPV4 = 0x0800
    ARP = 0x0806
    VLAN = 0x8100
    IPV6 = 0x86DD


class IpProto(IntEnum):
    """IPPROTO_* from include/uapi/linux/in.h."""

    ICMP = 1
    TCP = 6
    UDP = 17
    ICMPV6 = 58


class TcpFlags(IntFlag):
    """TCP header flags (byte 13), TCPHDR_* in include/net/tcp.h."""

    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80


def internet_checksum(data: bytes) -> int:
    """RFC 1071: the complemented one's-complement sum of big-endian 16-bit words (odd length padded)."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ethernet(dst_mac: str, src_mac: str, ethertype: int, payload: bytes, vlan: int | None = None) -> bytes:
    """An Ethernet II frame, with an 802.1Q tag (PCP 0) when `vlan` is a VLAN id. No FCS and no padding
    to 60 bytes: the kernel adds neither to frames a packet socket sends, so lengths stay exact."""
    tag = b""
    if vlan is not None:
        if not 0 <= vlan <= 4094:
            raise ValueError(f"VLAN id {vlan} is outside 0..4094")
        tag = struct.pack("!HH", EtherType.VLAN, vlan)
    return _mac(dst_mac) + _mac(src_mac) + tag + struct.pack("!H", ethertype) + payload


def ipv4(
    src: str,
    dst: str,
    proto: int,
    payload: bytes,
    ttl: int = 64,
    frag_offset: int = 0,
    more_fragments: bool = False,
    *,
    identification: int = 0,
) -> bytes:
    """An IPv4 packet with a 20-byte header and its checksum.

    `frag_offset` is where this fragment's payload starts in the original payload, in bytes (a multiple
    of 8); fragments of one datagram must share `identification`. DF is never set, so any packet may be
    fragmented.
    """
    if frag_offset % 8 or not 0 <= frag_offset <= 0x1FFF * 8:
        raise ValueError(f"fragment offset {frag_offset} is not a multiple of 8 in 0..{0x1FFF * 8}")
    total_length = 20 + len(payload)
    if total_length > 0xFFFF:
        raise ValueError(f"IPv4 packet of {total_length} bytes exceeds 65535")
    flags_offset = (0x2000 if more_fragments else 0) | frag_offset // 8
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,  # version 4, IHL 5: no options
        0,
        total_length,
        identification,
        flags_offset,
        ttl,
        proto,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:] + payload


def ipv6(src: str, dst: str, next_header: int, payload: bytes, hop_limit: int = 64) -> bytes:
    """An IPv6 packet with the fixed 40-byte header (traffic class and flow label 0)."""
    if len(payload) > 0xFFFF:
        raise ValueError(f"IPv6 payload of {len(payload)} bytes needs a jumbogram")
    return (
        struct.pack("!IHBB", 6 << 28, len(payload), next_header, hop_limit)
        + ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + payload
    )


def udp(src_ip: str, dst_ip: str, sport: int, dport: int, payload: bytes = b"") -> bytes:
    """A UDP datagram whose checksum covers the IPv4 or IPv6 pseudo-header of `src_ip` → `dst_ip`."""
    length = 8 + len(payload)
    if length > 0xFFFF:
        raise ValueError(f"UDP datagram of {length} bytes exceeds 65535")
    header = struct.pack("!HHHH", sport, dport, length, 0)
    # A computed 0 goes on the wire as 0xFFFF: 0 means "no checksum" (RFC 768), which IPv6 forbids.
    checksum = internet_checksum(_pseudo_header(src_ip, dst_ip, IpProto.UDP, length) + header + payload)
    return header[:6] + struct.pack("!H", checksum or 0xFFFF) + payload


def tcp(
    src_ip: str,
    dst_ip: str,
    sport: int,
    dport: int,
    payload: bytes = b"",
    *,
    flags: TcpFlags = TcpFlags.SYN,
    seq: int = 0,
    ack: int = 0,
    window: int = 65535,
) -> bytes:
    """A TCP segment with a 20-byte header (no options) and its pseudo-header checksum."""
    header = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, int(flags), window, 0, 0)
    segment = header + payload
    checksum = internet_checksum(_pseudo_header(src_ip, dst_ip, IpProto.TCP, len(segment)) + segment)
    return segment[:16] + struct.pack("!H", checksum) + segment[18:]


def icmp_echo(ident: int, seq: int, payload: bytes = b"", *, reply: bool = False) -> bytes:
    """An ICMP echo request (type 8), or reply (type 0), with its checksum."""
    message = struct.pack("!BBHHH", 0 if reply else 8, 0, 0, ident, seq) + payload
    return message[:2] + struct.pack("!H", internet_checksum(message)) + message[4:]


def icmpv6_echo(
    src_ip: str, dst_ip: str, ident: int, seq: int, payload: bytes = b"", *, reply: bool = False
) -> bytes:
    """An ICMPv6 echo request (type 128), or reply (129); unlike ICMP its checksum covers a pseudo-header."""
    message = struct.pack("!BBHHH", 129 if reply else 128, 0, 0, ident, seq) + payload
    checksum = internet_checksum(_pseudo_header(src_ip, dst_ip, IpProto.ICMPV6, len(message)) + message)
    return message[:2] + struct.pack("!H", checksum) + message[4:]


def arp_request(sender_mac: str, sender_ip: str, target_ip: str) -> bytes:
    """An ARP request (RFC 826, Ethernet/IPv4): who has `target_ip`, tell `sender_ip`."""
    return struct.pack(
        "!HHBBH6s4s6s4s",
        1,  # ARPHRD_ETHER
        EtherType.IPV4,
        6,
        4,
        1,  # ARPOP_REQUEST
        _mac(sender_mac),
        ipaddress.IPv4Address(sender_ip).packed,
        bytes(6),
        ipaddress.IPv4Address(target_ip).packed,
    )


def udp_frame(
    *,
    src_mac: str,
    dst_mac: str,
    src_ip: str,
    dst_ip: str,
    sport: int,
    dport: int,
    payload: bytes = b"",
    ttl: int = 64,
    vlan: int | None = None,
) -> bytes:
    """Ethernet + IPv4 + UDP."""
    datagram = udp(src_ip, dst_ip, sport, dport, payload)
    return ethernet(dst_mac, src_mac, EtherType.IPV4, ipv4(src_ip, dst_ip, IpProto.UDP, datagram, ttl), vlan)


def tcp_frame(
    *,
    src_mac: str,
    dst_mac: str,
    src_ip: str,
    dst_ip: str,
    sport: int,
    dport: int,
    payload: bytes = b"",
    flags: TcpFlags = TcpFlags.SYN,
    seq: int = 0,
    ack: int = 0,
    vlan: int | None = None,
) -> bytes:
    """Ethernet + IPv4 + TCP."""
    segment = tcp(src_ip, dst_ip, sport, dport, payload, flags=flags, seq=seq, ack=ack)
    return ethernet(dst_mac, src_mac, EtherType.IPV4, ipv4(src_ip, dst_ip, IpProto.TCP, segment), vlan)


def icmp_frame(
    *,
    src_mac: str,
    dst_mac: str,
    src_ip: str,
    dst_ip: str,
    ident: int = 0,
    seq: int = 0,
    payload: bytes = b"",
    reply: bool = False,
    vlan: int | None = None,
) -> bytes:
    """Ethernet + IPv4 + ICMP echo request (or reply)."""
    message = icmp_echo(ident, seq, payload, reply=reply)
    return ethernet(dst_mac, src_mac, EtherType.IPV4, ipv4(src_ip, dst_ip, IpProto.ICMP, message), vlan)


def ipv6_udp_frame(
    *,
    src_mac: str,
    dst_mac: str,
    src_ip: str,
    dst_ip: str,
    sport: int,
    dport: int,
    payload: bytes = b"",
    vlan: int | None = None,
) -> bytes:
    """Ethernet + IPv6 + UDP."""
    datagram = udp(src_ip, dst_ip, sport, dport, payload)
    return ethernet(dst_mac, src_mac, EtherType.IPV6, ipv6(src_ip, dst_ip, IpProto.UDP, datagram), vlan)


def arp_frame(*, src_mac: str, src_ip: str, target_ip: str, vlan: int | None = None) -> bytes:
    """A broadcast Ethernet frame carrying an ARP request for `target_ip`."""
    return ethernet(BROADCAST_MAC, src_mac, EtherType.ARP, arp_request(src_mac, src_ip, target_ip), vlan)


def _mac(mac: str) -> bytes:
    if not _MAC.fullmatch(mac):
        raise ValueError(f"not a MAC address: {mac!r}")
    return bytes.fromhex(mac.replace(":", ""))


def _pseudo_header(src_ip: str, dst_ip: str, proto: int, length: int) -> bytes:
    src, dst = ipaddress.ip_address(src_ip), ipaddress.ip_address(dst_ip)
    if src.version != dst.version:
        raise ValueError(f"{src_ip} and {dst_ip} are not the same IP version")
    if src.version == 4:  # RFC 768 / RFC 793
        return src.packed + dst.packed + struct.pack("!BBH", 0, proto, length)
    return src.packed + dst.packed + struct.pack("!I3xB", length, proto)  # RFC 8200 section 8.1
