"""bpfscope packets end to end: real frames across a veth into a namespace, counted by the real kernel."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loaded import held_by, still_loaded
from streams import finish, records_until

from bpfscope.object import load, tool_object
from bpfscope.program import XdpAction
from bpfscope.testing import packets as pk
from bpfscope.testing.netns import VethPair, send_frames
from bpfscope.tools.packets import PacketCounter

BPFSCOPE = [sys.executable, "-m", "bpfscope.cli.main"]


def start_counter(pair: VethPair, *extra: str) -> subprocess.Popen[str]:
    """`bpfscope packets --json` on the namespace's end; returns once its first interval is out."""
    proc = pair.popen([*BPFSCOPE, "packets", "--iface", pair.peer, "--json", "--interval", "0.2", *extra],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    assert first, f"bpfscope packets exited early: {proc.stderr.read()}"
    assert json.loads(first)["total"]["packets"] == 0
    return proc


def stop(proc: subprocess.Popen[str]) -> tuple[dict[str, Any], str]:
    records, err = finish(proc)
    final = records[-1]
    assert final["final"] is True
    return final, err


def frames_to_peer(pair: VethPair, n: int) -> dict[str, list[bytes]]:
    addressing = dict(src_mac=pair.host_mac, dst_mac=pair.peer_mac, src_ip=pair.host_ip, dst_ip=pair.peer_ip)
    v6 = dict(src_mac=pair.host_mac, dst_mac=pair.peer_mac, src_ip="fd00::1", dst_ip="fd00::2")
    return {
        "udp": [pk.udp_frame(**addressing, sport=40000 + i, dport=9, payload=b"u" * (i % 50)) for i in range(n)],
        "tcp": [pk.tcp_frame(**addressing, sport=41000 + i, dport=80, flags=pk.TcpFlags.SYN) for i in range(n)],
        "icmp": [pk.icmp_frame(**addressing, ident=7, seq=i, payload=b"i" * 20) for i in range(n)],
        "arp": [pk.arp_frame(src_mac=pair.host_mac, src_ip=pair.host_ip, target_ip=pair.peer_ip)] * 3,
        "ipv6_udp": [pk.ipv6_udp_frame(**v6, sport=5000, dport=5001, payload=b"6" * 10)] * 5,
    }


def test_counts_exactly_what_crossed_the_veth(veth_pair):
    n = 200
    frames = frames_to_peer(veth_pair, n)
    proc = start_counter(veth_pair)
    try:
        for kind in ("udp", "tcp", "icmp", "arp", "ipv6_udp"):
            assert send_frames(frames[kind], veth_pair.host) == len(frames[kind])
        # Counted when the peer end processes them, in its own softirq: wait for that, not for a while.
        records_until(proc, lambda r: r["total"]["packets"] >= 3 * n + 8)
    finally:
        final, err = stop(proc)
    size = {kind: sum(map(len, group)) for kind, group in frames.items()}
    assert final["l4"]["udp"] == {"packets": n + 5, "bytes": size["udp"] + size["ipv6_udp"]}
    assert final["l4"]["tcp"] == {"packets": n, "bytes": size["tcp"]}
    assert final["l4"]["icmp"] == {"packets": n, "bytes": size["icmp"]}
    assert final["l3"]["ipv4"] == {"packets": 3 * n, "bytes": size["udp"] + size["tcp"] + size["icmp"]}
    assert final["l3"]["ipv6"]["packets"] == 5
    assert final["l3"]["arp"]["packets"] == 3
    assert final["total"]["packets"] == 3 * n + 8
    assert f"Total packet count: {3 * n + 8}" in err


def test_kill_9_leaves_nothing_attached(veth_pair):
    proc = start_counter(veth_pair)
    its_programs = held_by(proc.pid)
    link = veth_pair.exec(["ip", "-d", "link", "show", veth_pair.peer], capture_output=True, text=True).stdout
    assert "xdp" in link and its_programs
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert not still_loaded(its_programs)  # the kernel frees a link once its last fd is gone, and its program
    link = veth_pair.exec(["ip", "-d", "link", "show", veth_pair.peer], capture_output=True, text=True).stdout
    assert "xdp" not in link


@pytest.fixture(scope="module")
def counter_obj():
    with load(tool_object("packets")) as obj:
        yield obj


def classify(obj, frame: bytes) -> tuple[XdpAction, dict[str, int], dict[str, int]]:
    """Runs the counter once on `frame` and returns which l3 and l4 rows it added to."""
    def packets() -> dict[str, list[int]]:
        row = obj.maps["counts"].sum(0)
        return {table: [count.packets for count in getattr(row, table)] for table in ("l3", "l4")}

    before = packets()
    result = obj.programs["count_packets"].test_run(frame)
    after = packets()
    names = {"l3": ["ipv4", "ipv6", "arp", "other"], "l4": ["tcp", "udp", "icmp", "other"]}
    delta = {table: {names[table][i]: a - b for i, (a, b) in enumerate(zip(after[table], before[table])) if a != b}
             for table in names}
    return result.action, delta["l3"], delta["l4"]


MAC = dict(src_mac="02:00:00:00:00:01", dst_mac="02:00:00:00:00:02")
V4 = dict(MAC, src_ip="192.0.2.1", dst_ip="192.0.2.2")
V6 = dict(MAC, src_ip="2001:db8::1", dst_ip="2001:db8::2")


@pytest.mark.parametrize(
    "frame, l3, l4",
    [
        (pk.udp_frame(**V4, sport=1, dport=2), "ipv4", "udp"),
        (pk.tcp_frame(**V4, sport=1, dport=2, flags=pk.TcpFlags.SYN), "ipv4", "tcp"),
        (pk.icmp_frame(**V4), "ipv4", "icmp"),
        (pk.udp_frame(**V4, sport=1, dport=2, vlan=42), "ipv4", "udp"),
        (pk.ipv6_udp_frame(**V6, sport=1, dport=2), "ipv6", "udp"),
        (pk.ethernet(MAC["dst_mac"], MAC["src_mac"], pk.EtherType.IPV6,
                     pk.ipv6("2001:db8::1", "2001:db8::2", pk.IpProto.ICMPV6,
                             pk.icmpv6_echo("2001:db8::1", "2001:db8::2", 1, 1))), "ipv6", "icmp"),
        (pk.arp_frame(src_mac=MAC["src_mac"], src_ip="192.0.2.1", target_ip="192.0.2.2"), "arp", None),
        (pk.ethernet(MAC["dst_mac"], MAC["src_mac"], 0x88CC, b"\0" * 46), "other", None),  # LLDP
        # truncated: an IPv4 ethertype with half an IP header is IPv4 of unknown transport
        (pk.udp_frame(**V4, sport=1, dport=2)[:24], "ipv4", "other"),
        (pk.ethernet(MAC["dst_mac"], MAC["src_mac"], pk.EtherType.IPV6, b"\x60\0"), "ipv6", "other"),
        # a non-first IPv4 fragment carries no transport header but still belongs to its protocol
        (pk.ethernet(MAC["dst_mac"], MAC["src_mac"], pk.EtherType.IPV4,
                     pk.ipv4("192.0.2.1", "192.0.2.2", pk.IpProto.UDP, b"x" * 16, frag_offset=8)), "ipv4", "udp"),
    ],
)
def test_test_run_classifies_crafted_packets(counter_obj, frame, l3, l4):
    action, d3, d4 = classify(counter_obj, frame)
    assert action is XdpAction.PASS
    assert d3 == {l3: 1}
    assert d4 == ({l4: 1} if l4 else {})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=14, max_size=300))
def test_any_bytes_pass_and_count_once(counter_obj, frame):
    action, d3, d4 = classify(counter_obj, frame)
    assert action is XdpAction.PASS
    assert sum(d3.values()) == 1
    assert sum(d4.values()) <= 1


def test_library_counter_names_rows_from_the_programs_enums(veth_pair):
    with PacketCounter(veth_pair.host) as c:
        snap = c.snapshot()
    assert list(snap.l3) == ["ipv4", "ipv6", "arp", "other"]
    assert list(snap.l4) == ["tcp", "udp", "icmp", "other"]
