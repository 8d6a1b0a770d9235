"""bpfscope flows end to end: real connections across a veth into a namespace, each flow's packets and
bytes checked exactly against what was sent or against the kernel's own AF_PACKET tap."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from loaded import held_by, left_behind, loaded, still_loaded, unheld
from streams import finish, records_until

from bpfscope.features import Feature
from bpfscope.object import ObjectSpec, tool_object
from bpfscope.testing import packets as pk
from bpfscope.testing.netns import VethPair, send_frames, tc_filters
from bpfscope.tools.flows import Flow, FlowTracker, TcpFlags

BPFSCOPE = [sys.executable, "-m", "bpfscope.cli.main"]
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_STATISTICS = 6
UDP_PORT = 7
TCP_PORT = 8080

TC_ACT_UNSPEC = 0xFFFFFFFF  # -1 as test_run's u32 retval: the verdict left to what runs next


# --- helpers ---------------------------------------------------------------------------------

def start_flows(pair: VethPair, *extra: str) -> subprocess.Popen[str]:
    """`bpfscope flows --json` on the root namespace's end; returns once its first interval is out."""
    proc = subprocess.Popen([*BPFSCOPE, "flows", "--iface", pair.host, "--json", "--interval", "0.2", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()  # type: ignore[union-attr]
    if not first:
        proc.wait(timeout=10)
        pytest.fail(f"bpfscope flows exited early: {proc.stderr.read()}")  # type: ignore[union-attr]
    json.loads(first)
    return proc


def stop(proc: subprocess.Popen[str]) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    """SIGTERM, then every interval record and the final one, each parsed."""
    records, err = finish(proc)
    assert records[-1]["final"] is True
    assert all("final" not in r for r in records[:-1])
    return records[:-1], records[-1], err


def by_endpoints(records: list[dict[str, Any]]) -> dict[tuple[str, str, int, str, int], dict[str, Any]]:
    return {(r["proto"], r["local"], r["local_port"], r["remote"], r["remote_port"]): r for r in records}


# bpftool 7.1 does not list tcx links under `net show`; a tcx link holds its program, so one still loaded after
# the tool exited would mean a link still attached.
PROGRAMS = ("track_ingress", "track_egress")


def programs_of(pid: int) -> set[int]:
    """The programs process `pid` holds: flows' two."""
    held = held_by(pid)
    assert sorted(name for id, name in loaded().items() if id in held) == sorted(PROGRAMS)
    return held


class Tap:
    """The kernel's ground truth: an AF_PACKET socket on the interface counts every frame it sees
    per (proto, local, lport, remote, rport) and direction, with the frame's full length (skb->len)."""

    def __init__(self, iface: str) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)  # SO_RCVBUFFORCE: no drops while we read
        self.sock.bind((iface, 0))
        self.counts: Counter[tuple[Any, ...]] = Counter()
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buf = bytearray(1 << 17)
        self.sock.settimeout(0.05)
        while True:
            try:
                length, addr = self.sock.recvfrom_into(buf, len(buf), socket.MSG_TRUNC)
            except socket.timeout:
                if self._stop:  # and every frame queued before close() was read
                    return
                continue
            key = self._flow(bytes(buf[:120]), addr[2] == PACKET_OUTGOING)
            if key:
                self.counts[key + ("packets",)] += 1
                self.counts[key + ("bytes",)] += length

    @staticmethod
    def _flow(frame: bytes, outgoing: bool) -> tuple[Any, ...] | None:
        if frame[12:14] != b"\x08\x00":
            return None
        ihl = (frame[14] & 0x0F) * 4
        proto = {6: "tcp", 17: "udp"}.get(frame[23])
        if proto is None:
            return None
        src, dst = socket.inet_ntoa(frame[26:30]), socket.inet_ntoa(frame[30:34])
        sport, dport = struct.unpack("!HH", frame[14 + ihl:18 + ihl])
        if outgoing:
            return (proto, src, sport, dst, dport, "out")
        return (proto, dst, dport, src, sport, "in")

    def close(self) -> None:
        """Once it has read every frame the kernel queued to it (each before the exchange that sent it ended)."""
        self._stop = True
        self._thread.join()
        _, drops = struct.unpack("II", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        self.sock.close()
        assert drops == 0, f"the AF_PACKET tap dropped {drops} frames: the ground truth is incomplete"

    def expect(self, proto: str, local: str, lport: int, remote: str, rport: int) -> dict[str, int]:
        key = (proto, local, lport, remote, rport)
        return {f"{field}_{d}": self.counts[key + (d, field)] for d in ("in", "out") for field in ("packets", "bytes")}


SERVER = textwrap.dedent("""
    import socket, sys, threading
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", {udp_port}))
    tcp = socket.socket()
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("0.0.0.0", {tcp_port}))
    tcp.listen(64)

    def echo_udp():
        while True:
            data, addr = udp.recvfrom(65535)
            udp.sendto(data, addr)

    def serve(conn):
        # Reads until the client shuts down its side, then answers with half as many bytes.
        got = 0
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            got += len(chunk)
        conn.sendall(b"r" * (got // 2))
        conn.close()

    threading.Thread(target=echo_udp, daemon=True).start()
    print("ready", flush=True)
    while True:
        conn, _ = tcp.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
""")


def start_server(pair: VethPair) -> subprocess.Popen[str]:
    server = pair.popen([sys.executable, "-c", SERVER.format(udp_port=UDP_PORT, tcp_port=TCP_PORT)],
                        stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    return server


def udp_exchange(pair: VethPair, sizes: list[int]) -> int:
    """Sends one datagram of each size to the echo server and waits for every echo; returns the local port."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((pair.host_ip, 0))
        s.settimeout(5)
        for size in sizes:  # one at a time, so no datagram is lost to a full socket buffer
            s.sendto(b"x" * size, (pair.peer_ip, UDP_PORT))
            assert len(s.recv(65535)) == size
        return int(s.getsockname()[1])


def tcp_exchange(pair: VethPair, nbytes: int) -> int:
    with socket.create_connection((pair.peer_ip, TCP_PORT), timeout=5, source_address=(pair.host_ip, 0)) as s:
        port = int(s.getsockname()[1])
        s.sendall(b"q" * nbytes)
        s.shutdown(socket.SHUT_WR)
        got = 0
        while chunk := s.recv(65536):
            got += len(chunk)
        assert got == nbytes // 2
    return port


# --- end to end, exact ------------------------------------------------------------------------

def test_every_flow_exact_in_both_directions(veth_pair, tc_mode):
    server = start_server(veth_pair)
    tap = Tap(veth_pair.host)
    proc = start_flows(veth_pair, "--top", "1000")
    its_programs = programs_of(proc.pid)
    try:
        udp_sizes = {n: [1 + (i * 37 + n) % 1400 for i in range(20 + 7 * n)] for n in range(3)}
        udp_ports = {n: udp_exchange(veth_pair, sizes) for n, sizes in udp_sizes.items()}
        tcp_bytes = [1_000 * (k + 1) ** 3 for k in range(4)]  # 1 kB .. 64 kB: one segment to several
        # Each exchange ended with what it sent counted: the tap and tc saw each frame before its receiver did.
        tcp_ports = [tcp_exchange(veth_pair, n) for n in tcp_bytes]
        shown = records_until(proc, lambda r: True)  # an interval's record, at least
    finally:
        intervals, final, err = stop(proc)
        tap.close()
    assert not still_loaded(its_programs)  # detached and unloaded on SIGTERM
    assert f"Total flow count: {final['flows']}" in err
    assert all(r["iface"] == veth_pair.host and r["mode"] == tc_mode for r in shown + intervals)
    assert ("no tcx links (Linux 6.6+); attached to" in err) is (tc_mode == "clsact")  # the fallback, in one line
    flows = by_endpoints(final["top"])
    assert final["flows"] == len(final["top"]) == len(udp_ports) + len(tcp_ports)

    for n, port in udp_ports.items():
        flow = flows[("udp", veth_pair.host_ip, port, veth_pair.peer_ip, UDP_PORT)]
        frame_bytes = sum(14 + 20 + 8 + size for size in udp_sizes[n])  # Ethernet + IPv4 + UDP + payload
        assert flow["out"] == {"packets": len(udp_sizes[n]), "bytes": frame_bytes, "tcp_flags": ""}
        assert flow["in"] == {"packets": len(udp_sizes[n]), "bytes": frame_bytes, "tcp_flags": ""}
        assert flow["family"] == "ipv4"
        assert flow["first_seen"] <= flow["last_seen"] <= final["time"]
        assert abs(flow["first_seen"] - time.time()) < 30  # wall clock, not boot time
        truth = tap.expect("udp", veth_pair.host_ip, port, veth_pair.peer_ip, UDP_PORT)
        assert truth == {"packets_in": len(udp_sizes[n]), "bytes_in": frame_bytes,
                         "packets_out": len(udp_sizes[n]), "bytes_out": frame_bytes}

    for nbytes, port in zip(tcp_bytes, tcp_ports):
        flow = flows[("tcp", veth_pair.host_ip, port, veth_pair.peer_ip, TCP_PORT)]
        truth = tap.expect("tcp", veth_pair.host_ip, port, veth_pair.peer_ip, TCP_PORT)
        got = {f"{field}_{d}": flow[d][field] for d in ("in", "out") for field in ("packets", "bytes")}
        assert got == truth, f"{nbytes}-byte connection"
        # Payload plus at least 54 bytes of headers (Ethernet, IPv4, TCP) per frame.
        assert flow["out"]["bytes"] >= nbytes + 54 * flow["out"]["packets"]
        assert flow["in"]["bytes"] >= nbytes // 2 + 54 * flow["in"]["packets"]
        for d in ("in", "out"):
            assert set(flow[d]["tcp_flags"].split("|")) >= {"SYN", "ACK", "FIN"}
    server.kill()


def test_ipv6_flows_exact_both_ways(veth_pair):
    local, remote = "fd00:beef::1", "fd00:beef::2"
    out_frames = [pk.ipv6_udp_frame(src_mac=veth_pair.host_mac, dst_mac=veth_pair.peer_mac, src_ip=local,
                                    dst_ip=remote, sport=5000, dport=5001, payload=b"6" * i) for i in range(30)]
    in_frames = [pk.ipv6_udp_frame(src_mac=veth_pair.peer_mac, dst_mac=veth_pair.host_mac, src_ip=remote,
                                   dst_ip=local, sport=5001, dport=5000, payload=b"9" * (2 * i)) for i in range(17)]
    tcp6 = pk.ethernet(veth_pair.peer_mac, veth_pair.host_mac, pk.EtherType.IPV6,
                       pk.ipv6(local, remote, pk.IpProto.TCP,
                               pk.tcp(local, remote, 6000, 443, b"", flags=pk.TcpFlags.SYN | pk.TcpFlags.ECE)))
    proc = start_flows(veth_pair, "--top", "1000")
    try:
        assert send_frames(out_frames + [tcp6], veth_pair.host) == len(out_frames) + 1
        # Frames from the peer arrive on the host's ingress: inject them inside the namespace.
        inject = "import sys; from bpfscope.testing.netns import send_frames; " \
                 "send_frames([bytes.fromhex(h) for h in sys.argv[2:]], sys.argv[1])"
        veth_pair.exec([sys.executable, "-c", inject, veth_pair.peer, *(f.hex() for f in in_frames)], check=True)
        # They reach the host end's ingress in its softirq, which a busy machine may run after the sender returned.
        records_until(proc, lambda r: any(f["family"] == "ipv6" and f["in"]["packets"] == 17 for f in r["top"]))
    finally:
        _, final, _ = stop(proc)
    flows = by_endpoints(final["top"])
    udp = flows[("udp", local, 5000, remote, 5001)]
    assert udp["family"] == "ipv6"
    assert udp["out"]["packets"] == 30 and udp["out"]["bytes"] == sum(map(len, out_frames))
    assert udp["in"]["packets"] == 17 and udp["in"]["bytes"] == sum(map(len, in_frames))
    tcp = flows[("tcp", local, 6000, remote, 443)]
    assert tcp["out"] == {"packets": 1, "bytes": len(tcp6), "tcp_flags": "SYN|ECE"}
    assert tcp["in"] == {"packets": 0, "bytes": 0, "tcp_flags": ""}


def test_map_stays_bounded_under_a_flood_of_sources(veth_pair):
    frames = [pk.udp_frame(src_mac=veth_pair.host_mac, dst_mac=veth_pair.peer_mac,
                           src_ip=f"10.{200 + i // 65536}.{i // 256 % 256}.{i % 256}", dst_ip=veth_pair.peer_ip,
                           sport=1024 + i % 50000, dport=9) for i in range(5_000)]
    proc = start_flows(veth_pair, "--max-flows", "256", "--top", "5", "--sort", "packets")
    try:
        assert send_frames(frames, veth_pair.host) == len(frames)
        after = [json.loads(proc.stdout.readline()) for _ in range(3)]  # type: ignore[union-attr]
        assert proc.poll() is None, "the tool stopped under the flood"
    finally:
        intervals, final, _ = stop(proc)
    assert all(r["max_flows"] == 256 and r["flows"] <= 256 for r in intervals + after + [final])
    assert 0 < final["flows"] <= 256
    assert max(r["flows"] for r in intervals + after) > 100  # the flood did fill the map
    assert len(final["top"]) == 5
    assert all(f["out"]["packets"] == 1 for f in final["top"])


def test_library_bound_and_idle_expiry(veth_pair):
    def frame(sport: int) -> bytes:
        return pk.udp_frame(src_mac=veth_pair.host_mac, dst_mac=veth_pair.peer_mac, src_ip=veth_pair.host_ip,
                            dst_ip=veth_pair.peer_ip, sport=sport, dport=9, payload=b"p" * 10)

    with FlowTracker(veth_pair.host, max_flows=64) as tracker:
        assert tracker.map.max_entries == 64
        send_frames([frame(1111)] * 3, veth_pair.host)  # tc egress counts each in the send
        snap = tracker.snapshot(expire_idle=5)
        assert snap.expired == 0
        old = [f for f in snap.flows() if f.local_port == 1111]
        assert len(old) == 1 and old[0].packets_out == 3 and old[0].bytes_out == 3 * len(frame(1111))
        time.sleep(1.5)
        send_frames([frame(2222)], veth_pair.host)
        # 1111 has been idle for 1.5 s at least; 2222 for less than 1 s, unless the machine stalls that long.
        snap = tracker.snapshot(expire_idle=1.0)
        assert snap.expired >= 1  # 1111 (and the ICMP errors it caused, if any)
        assert [f.local_port for f in snap.flows() if f.proto == "udp"] == [2222]
        keys, _ = tracker.map.lookup_batch()
        assert 1111 not in keys["local_port"]  # deleted from the kernel's map, not just hidden
        assert 2222 in keys["local_port"]


def test_rate_and_sort(veth_pair):
    def frames(sport: int, n: int, size: int) -> list[bytes]:
        return [pk.udp_frame(src_mac=veth_pair.host_mac, dst_mac=veth_pair.peer_mac, src_ip=veth_pair.host_ip,
                             dst_ip=veth_pair.peer_ip, sport=sport, dport=9, payload=b"r" * size)] * n

    with FlowTracker(veth_pair.host) as tracker:
        send_frames(frames(1, 100, 10) + frames(2, 10, 1000), veth_pair.host)  # 1: more packets, 2: more bytes
        time.sleep(0.1)
        tracker.snapshot()
        send_frames(frames(3, 5, 100), veth_pair.host)  # 3: the only one that moved since
        time.sleep(0.1)
        snap = tracker.snapshot()
        udp = [f for f in snap.top(10, sort=_sort("packets")) if f.proto == "udp"]
        assert [f.local_port for f in udp] == [1, 2, 3]
        assert [f.local_port for f in snap.top(10, sort=_sort("bytes")) if f.proto == "udp"] == [2, 1, 3]
        assert snap.top(1, sort=_sort("rate"))[0].local_port == 3
        moved = {f.local_port: f.rate for f in udp}
        assert moved[1] == moved[2] == 0
        assert moved[3] == pytest.approx(5 * len(frames(3, 1, 100)[0]) / snap.interval)


def _sort(name: str) -> Any:
    from bpfscope.tools.flows import SortKey

    return SortKey(name)


# --- the program on crafted packets (BPF_PROG_TEST_RUN) ---------------------------------------

@pytest.fixture(scope="module")
def flows_obj():
    spec = ObjectSpec.open(tool_object("flows"))
    spec.maps["flows"].max_entries = 1024
    with spec.load() as obj:
        yield obj


MAC = dict(src_mac="02:00:00:00:00:01", dst_mac="02:00:00:00:00:02")


def test_both_directions_land_in_one_entry(flows_obj):
    flows_obj.maps["flows"].clear()
    request = pk.tcp_frame(**MAC, src_ip="192.0.2.1", dst_ip="198.51.100.7", sport=33000, dport=443,
                           flags=pk.TcpFlags.SYN)
    reply = pk.tcp_frame(**MAC, src_ip="198.51.100.7", dst_ip="192.0.2.1", sport=443, dport=33000,
                         flags=pk.TcpFlags.SYN | pk.TcpFlags.ACK, payload=b"hello")
    assert flows_obj.programs["track_egress"].test_run(request).retval == TC_ACT_UNSPEC
    assert flows_obj.programs["track_ingress"].test_run(reply).retval == TC_ACT_UNSPEC
    keys, values = flows_obj.maps["flows"].lookup_batch()
    assert len(keys) == 1
    key = keys[0]
    assert bytes(key["local_addr"][:4]) == socket.inet_aton("192.0.2.1") and not key["local_addr"][4:].any()
    assert bytes(key["remote_addr"][:4]) == socket.inet_aton("198.51.100.7")
    assert (key["local_port"], key["remote_port"], key["proto"]) == (33000, 443, 6)
    total = values.sum(axis=1) if values.dtype.names is None else None
    assert total is None  # a struct per CPU
    row = {name: values[name].sum() for name in ("packets_in", "packets_out", "bytes_in", "bytes_out")}
    assert row == {"packets_in": 1, "packets_out": 1, "bytes_in": len(reply), "bytes_out": len(request)}
    assert int(values["tcp_flags_out"].max()) == TcpFlags.SYN
    assert int(values["tcp_flags_in"].max()) == TcpFlags.SYN | TcpFlags.ACK


def test_non_ip_is_not_a_flow(flows_obj):
    flows_obj.maps["flows"].clear()
    arp = pk.arp_frame(src_mac=MAC["src_mac"], src_ip="192.0.2.1", target_ip="192.0.2.2")
    for program in ("track_ingress", "track_egress"):
        assert flows_obj.programs[program].test_run(arp).retval == TC_ACT_UNSPEC
    assert len(flows_obj.maps["flows"]) == 0


# The kernel (6.18 here) refuses (EINVAL) to test_run a tc program on an IPv4 or IPv6 frame shorter than its
# network header; such a frame never reaches tc from a real interface either.
L3_HEADER = {b"\x08\x00": 20, b"\x86\xdd": 40}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=14, max_size=200), st.sampled_from(["track_ingress", "track_egress"]))
def test_any_bytes_pass_unchanged(flows_obj, frame, program):
    assume(len(frame) >= 14 + L3_HEADER.get(frame[12:14], 0))
    result = flows_obj.programs[program].test_run(frame)
    assert result.retval == TC_ACT_UNSPEC
    assert result.data == frame


def test_flow_endpoints_text():
    flow = Flow("ipv6", "tcp", "fd00::1", 443, "fd00::2", 5555, 1, 2, 3, 4, 0.0, 0.0, 0, 0, 0.0)
    assert flow.endpoints() == "tcp [fd00::1]:443 ⇄ [fd00::2]:5555"


# --- the command ------------------------------------------------------------------------------

def bpfscope(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BPFSCOPE, *args], capture_output=True, text=True, timeout=60, check=False)


def assert_one_line_error(args: list[str], code: int, *expected: str) -> None:
    before = unheld(PROGRAMS)
    result = bpfscope("flows", *args)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("bpfscope flows:")
    for text in expected:
        assert text in lines[0]
    assert not left_behind(PROGRAMS, before)


def test_unknown_interface():
    assert_one_line_error(["--iface", "nosuch0", "--duration", "1"], 1,
                          "no interface 'nosuch0'", "lo")


@pytest.mark.parametrize("args, expected", [
    (["--sort", "size"], "invalid choice: 'size'"),
    (["--max-flows", "0"], "'0' must be between 1 and"),
    (["--max-flows", "many"], "'many' is not a whole number"),
    (["--max-flows", str(1 << 30)], "must be between 1 and 16,777,216"),
    (["--idle", "0"], "'0' must be greater than 0"),
    (["--top", "-1"], "must be between 1"),
    (["--mode", "xdp"], "invalid choice: 'xdp'"),
])
def test_bad_option_values(args, expected):
    assert_one_line_error(["--iface", "lo", *args], 2, expected)


def test_live_table_refreshes_in_place_on_a_tty(veth_pair, tc_mode, on_a_tty):
    status, text = on_a_tty([*BPFSCOPE, "flows", "--iface", veth_pair.host, "--duration", "2", "--interval", "0.3"],
                            ready="bpfscope flows on",
                            then=lambda: veth_pair.send_udp(count=10, sport=4242, payload=b"t" * 32))
    assert status == 0, text
    assert f"bpfscope flows on {veth_pair.host} (tc {tc_mode})" in text
    assert "\x1b[1A" in text  # cursor up: the table was redrawn over itself, not appended
    assert text.count("packets in") >= 3  # drawn at start and once per interval
    assert f"udp {veth_pair.host_ip}:4242 ⇄ {veth_pair.peer_ip}:9" in text
    assert "Total flow count:" in text


def test_clsact_filters_a_killed_flows_left_are_removed_at_the_next_start(veth_pair):
    proc = start_flows(veth_pair, "--mode", "clsact")
    left = tc_filters(veth_pair.host)
    assert {direction for direction, _ in left} == {"ingress", "egress"}
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert tc_filters(veth_pair.host) == left  # a cls_bpf filter is not fd-based: it outlives its process
    result = bpfscope("flows", "--iface", veth_pair.host, "--mode", "clsact", "--duration", "0.5", "--json")
    assert result.returncode == 0, result.stderr
    assert sorted(line for line in result.stderr.splitlines() if "removed" in line) == [
        f"bpfscope flows: removed the tc {direction} filter of program {program} on {veth_pair.host}, "
        "left by a bpfscope that was killed" for direction, program in sorted(left)]
    assert tc_filters(veth_pair.host) == set()  # and its own went when it ended


# Only a tcx link goes with its last fd (a clsact filter outlives a killed process: above).
@pytest.mark.requires(Feature.TCX)
def test_kill_9_leaves_nothing_attached(veth_pair):
    proc = start_flows(veth_pair)
    its_programs = programs_of(proc.pid)

    def tcx_links() -> list[dict[str, Any]]:
        """Links holding its programs (bpftool 7.1 shows a tcx link's type only as a number)."""
        out = subprocess.run(["bpftool", "-j", "link", "show"], capture_output=True, text=True, check=True).stdout
        return [link for link in json.loads(out or "[]") if link.get("prog_id") in its_programs]

    assert len(tcx_links()) == 2  # ingress and egress
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert not still_loaded(its_programs)  # the kernel frees a link once its last fd is gone, then its program
    assert tcx_links() == []
