"""Packet builders: layouts, lengths and checksums, each checked against an independent computation."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bpfscope.testing import packets
from bpfscope.testing.packets import EtherType, IpProto, TcpFlags

MAC_A = "02:00:00:00:00:0a"
MAC_B = "02:00:00:00:00:0b"
V4_A, V4_B = "192.0.2.1", "198.51.100.7"
V6_A, V6_B = "2001:db8::1", "2001:db8:ffff::2"

ports = st.integers(0, 0xFFFF)
payloads = st.binary(max_size=1500)
v4_addresses = st.ip_addresses(v=4).map(str)
v6_addresses = st.ip_addresses(v=6).map(str)


def ones_sum(data: bytes) -> int:
    """One's-complement 16-bit sum, folded at every step: a region with a valid checksum sums to 0xFFFF."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def pseudo_header(src: str, dst: str, proto: int, length: int) -> bytes:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 4:
        return s.packed + d.packed + bytes([0, proto]) + length.to_bytes(2, "big")
    return s.packed + d.packed + length.to_bytes(4, "big") + bytes([0, 0, 0, proto])


def assert_transport_checksum(src: str, dst: str, proto: int, segment: bytes) -> None:
    assert ones_sum(pseudo_header(src, dst, proto, len(segment)) + segment) == 0xFFFF


def test_internet_checksum_rfc1071_example() -> None:
    # RFC 1071 section 3: these bytes sum to 0xddf2, so the checksum is its complement.
    assert packets.internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF - 0xDDF2


def test_internet_checksum_pads_odd_length() -> None:
    assert packets.internet_checksum(b"\x12") == packets.internet_checksum(b"\x12\x00") == 0xFFFF - 0x1200


def test_ethernet_layout() -> None:
    frame = packets.ethernet(MAC_B, MAC_A, EtherType.IPV4, b"xyz")
    assert frame == bytes.fromhex("02000000000b02000000000a0800") + b"xyz"


def test_ethernet_vlan_tag() -> None:
    frame = packets.ethernet(MAC_B, MAC_A, EtherType.IPV6, b"", vlan=100)
    assert len(frame) == 18
    assert struct.unpack("!HHH", frame[12:18]) == (0x8100, 100, 0x86DD)


@pytest.mark.parametrize(
    "mac", ["02:00:00:00:00", "02:00:00:00:00:0g", "0200.0000.000a", "02:00:00:00:00:0a "]
)
def test_ethernet_rejects_bad_mac(mac: str) -> None:
    with pytest.raises(ValueError, match="MAC"):
        packets.ethernet(mac, MAC_A, EtherType.IPV4, b"")


@pytest.mark.parametrize("vlan", [-1, 4095])
def test_ethernet_rejects_bad_vlan(vlan: int) -> None:
    with pytest.raises(ValueError, match="VLAN"):
        packets.ethernet(MAC_B, MAC_A, EtherType.IPV4, b"", vlan=vlan)


@given(
    src=v4_addresses, dst=v4_addresses, proto=st.integers(0, 255), payload=payloads, ttl=st.integers(0, 255)
)
def test_ipv4_header(src: str, dst: str, proto: int, payload: bytes, ttl: int) -> None:
    packet = packets.ipv4(src, dst, proto, payload, ttl=ttl)
    header = packet[:20]
    assert ones_sum(header) == 0xFFFF
    version_ihl, _, total, ident, flags_offset, got_ttl, got_proto = struct.unpack("!BBHHHBB", header[:10])
    assert (version_ihl, total, ident, flags_offset, got_ttl, got_proto) == (
        0x45,
        20 + len(payload),
        0,
        0,
        ttl,
        proto,
    )
    assert header[12:16] == ipaddress.IPv4Address(src).packed
    assert header[16:20] == ipaddress.IPv4Address(dst).packed
    assert packet[20:] == payload


def test_ipv4_fragment_fields() -> None:
    packet = packets.ipv4(
        V4_A, V4_B, IpProto.UDP, b"x" * 8, frag_offset=1480, more_fragments=True, identification=0x1234
    )
    ident, flags_offset = struct.unpack("!HH", packet[4:8])
    assert ident == 0x1234
    assert flags_offset == 0x2000 | 185  # MF, offset in 8-byte units
    assert ones_sum(packet[:20]) == 0xFFFF
    last = packets.ipv4(V4_A, V4_B, IpProto.UDP, b"x", frag_offset=8 * 0x1FFF)
    assert struct.unpack("!H", last[6:8])[0] == 0x1FFF


@pytest.mark.parametrize("offset", [4, -8, 8 * 0x2000])
def test_ipv4_rejects_bad_fragment_offset(offset: int) -> None:
    with pytest.raises(ValueError, match="fragment offset"):
        packets.ipv4(V4_A, V4_B, IpProto.UDP, b"", frag_offset=offset)


def test_ipv4_rejects_oversized_and_v6() -> None:
    with pytest.raises(ValueError, match="65535"):
        packets.ipv4(V4_A, V4_B, IpProto.UDP, bytes(0xFFFF - 19))
    with pytest.raises(ValueError):
        packets.ipv4(V6_A, V4_B, IpProto.UDP, b"")


@given(src=v6_addresses, dst=v6_addresses, payload=payloads)
def test_ipv6_header(src: str, dst: str, payload: bytes) -> None:
    packet = packets.ipv6(src, dst, IpProto.UDP, payload, hop_limit=9)
    first, length, next_header, hop_limit = struct.unpack("!IHBB", packet[:8])
    assert (first, length, next_header, hop_limit) == (6 << 28, len(payload), 17, 9)
    assert packet[8:24] == ipaddress.IPv6Address(src).packed
    assert packet[24:40] == ipaddress.IPv6Address(dst).packed
    assert packet[40:] == payload


@given(src=v4_addresses, dst=v4_addresses, sport=ports, dport=ports, payload=payloads)
def test_udp_over_ipv4(src: str, dst: str, sport: int, dport: int, payload: bytes) -> None:
    datagram = packets.udp(src, dst, sport, dport, payload)
    assert struct.unpack("!HHH", datagram[:6]) == (sport, dport, 8 + len(payload))
    assert datagram[8:] == payload
    assert datagram[6:8] != b"\0\0"
    assert_transport_checksum(src, dst, 17, datagram)


@given(src=v6_addresses, dst=v6_addresses, sport=ports, dport=ports, payload=payloads)
def test_udp_over_ipv6(src: str, dst: str, sport: int, dport: int, payload: bytes) -> None:
    datagram = packets.udp(src, dst, sport, dport, payload)
    assert datagram[6:8] != b"\0\0"
    assert_transport_checksum(src, dst, 17, datagram)


def test_udp_checksum_zero_is_sent_as_ffff() -> None:
    # Choose the 2-byte payload that makes the computed checksum exactly 0.
    probe = packets.udp(V4_A, V4_B, 1, 2, b"\0\0")
    datagram = packets.udp(V4_A, V4_B, 1, 2, probe[6:8])
    assert datagram[6:8] == b"\xff\xff"
    assert_transport_checksum(V4_A, V4_B, 17, datagram)


def test_udp_rejects_mixed_versions() -> None:
    with pytest.raises(ValueError, match="IP version"):
        packets.udp(V4_A, V6_B, 1, 2)


@given(
    src=v4_addresses | v6_addresses,
    sport=ports,
    dport=ports,
    payload=payloads,
    flags=st.integers(0, 255).map(TcpFlags),
    seq=st.integers(0, 2**32 - 1),
    ack=st.integers(0, 2**32 - 1),
)
def test_tcp(src: str, sport: int, dport: int, payload: bytes, flags: TcpFlags, seq: int, ack: int) -> None:
    dst = V4_B if ipaddress.ip_address(src).version == 4 else V6_B
    segment = packets.tcp(src, dst, sport, dport, payload, flags=flags, seq=seq, ack=ack)
    got = struct.unpack("!HHIIBBH", segment[:16])
    assert got == (sport, dport, seq, ack, 0x50, int(flags), 65535)
    assert segment[18:20] == b"\0\0"  # urgent pointer
    assert segment[20:] == payload
    assert_transport_checksum(src, dst, 6, segment)


def test_tcp_flag_bits() -> None:
    segment = packets.tcp(V4_A, V4_B, 1, 2, flags=TcpFlags.SYN | TcpFlags.ACK)
    assert segment[13] == 0x12


@given(ident=ports, seq=ports, payload=payloads, reply=st.booleans())
def test_icmp_echo(ident: int, seq: int, payload: bytes, reply: bool) -> None:
    message = packets.icmp_echo(ident, seq, payload, reply=reply)
    assert struct.unpack("!BBxxHH", message[:8]) == (0 if reply else 8, 0, ident, seq)
    assert message[8:] == payload
    assert ones_sum(message) == 0xFFFF


@given(src=v6_addresses, dst=v6_addresses, ident=ports, seq=ports, payload=payloads, reply=st.booleans())
def test_icmpv6_echo(src: str, dst: str, ident: int, seq: int, payload: bytes, reply: bool) -> None:
    message = packets.icmpv6_echo(src, dst, ident, seq, payload, reply=reply)
    assert struct.unpack("!BBxxHH", message[:8]) == (129 if reply else 128, 0, ident, seq)
    assert_transport_checksum(src, dst, 58, message)


def test_arp_request_layout() -> None:
    request = packets.arp_request(MAC_A, V4_A, V4_B)
    assert len(request) == 28
    assert struct.unpack("!HHBBH", request[:8]) == (1, 0x0800, 6, 4, 1)
    assert request[8:14] == bytes.fromhex("02000000000a")
    assert request[14:18] == ipaddress.IPv4Address(V4_A).packed
    assert request[18:24] == bytes(6)
    assert request[24:28] == ipaddress.IPv4Address(V4_B).packed


@given(payload=payloads, vlan=st.none() | st.integers(0, 4094))
def test_udp_frame(payload: bytes, vlan: int | None) -> None:
    frame = packets.udp_frame(
        src_mac=MAC_A,
        dst_mac=MAC_B,
        src_ip=V4_A,
        dst_ip=V4_B,
        sport=1234,
        dport=53,
        payload=payload,
        vlan=vlan,
    )
    l3 = 18 if vlan is not None else 14
    assert len(frame) == l3 + 20 + 8 + len(payload)
    assert frame[:12] == bytes.fromhex("02000000000b02000000000a")
    assert struct.unpack("!H", frame[l3 - 2 : l3])[0] == 0x0800
    assert ones_sum(frame[l3 : l3 + 20]) == 0xFFFF
    assert frame[l3 + 9] == 17
    assert_transport_checksum(V4_A, V4_B, 17, frame[l3 + 20 :])
    assert frame[l3 + 28 :] == payload


def test_tcp_frame() -> None:
    frame = packets.tcp_frame(
        src_mac=MAC_A, dst_mac=MAC_B, src_ip=V4_A, dst_ip=V4_B, sport=1, dport=80, flags=TcpFlags.RST, seq=7
    )
    assert len(frame) == 14 + 20 + 20
    assert frame[14 + 9] == 6 and frame[14 + 20 + 13] == 0x04
    assert ones_sum(frame[14:34]) == 0xFFFF
    assert_transport_checksum(V4_A, V4_B, 6, frame[34:])


def test_icmp_frame() -> None:
    frame = packets.icmp_frame(
        src_mac=MAC_A, dst_mac=MAC_B, src_ip=V4_A, dst_ip=V4_B, ident=1, seq=2, payload=b"p"
    )
    assert len(frame) == 14 + 20 + 8 + 1
    assert frame[14 + 9] == 1 and frame[34] == 8
    assert ones_sum(frame[34:]) == 0xFFFF


def test_ipv6_udp_frame() -> None:
    frame = packets.ipv6_udp_frame(
        src_mac=MAC_A, dst_mac=MAC_B, src_ip=V6_A, dst_ip=V6_B, sport=1, dport=2, payload=b"abc", vlan=7
    )
    assert len(frame) == 18 + 40 + 8 + 3
    assert struct.unpack("!HHH", frame[12:18]) == (0x8100, 7, 0x86DD)
    assert struct.unpack("!H", frame[18 + 4 : 18 + 6])[0] == 11
    assert frame[18 + 6] == 17
    assert_transport_checksum(V6_A, V6_B, 17, frame[58:])


def test_arp_frame_is_broadcast() -> None:
    frame = packets.arp_frame(src_mac=MAC_A, src_ip=V4_A, target_ip=V4_B)
    assert frame[:6] == b"\xff" * 6
    assert frame[6:12] == bytes.fromhex("02000000000a")
    assert struct.unpack("!H", frame[12:14])[0] == 0x0806
    assert frame[14:] == packets.arp_request(MAC_A, V4_A, V4_B)
