"""bpfscope guard: the token bucket's arithmetic exactly through BPF_PROG_TEST_RUN, then floods across a
veth against the real command, and the control commands through its pins."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import struct
import subprocess
import sys
import time
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loaded import left_behind, unheld
from streams import finish, records_until

from bpfscope.object import Object
from bpfscope.pin import PIN_ROOT, tool_pin_dir
from bpfscope.program import XdpAction
from bpfscope.testing import packets as pk
from bpfscope.testing.netns import VethPair
from bpfscope.tools.cidr import source_name
from bpfscope.tools.guard import Counts, Guard, GuardControl, Limit, RunningGuard, load_guard
from bpfscope.tools.guard import limiter as limit_program

BPFSCOPE = [sys.executable, "-m", "bpfscope.cli.main"]
MAC = dict(src_mac="02:00:00:00:00:01", dst_mac="02:00:00:00:00:02")


def udp4(src: str = "192.0.2.1", **kw: Any) -> bytes:
    return pk.udp_frame(**MAC, src_ip=src, dst_ip="192.0.2.200", sport=1000, dport=9, **kw)


def udp6(src: str = "2001:db8::1") -> bytes:
    return pk.ipv6_udp_frame(**MAC, src_ip=src, dst_ip="2001:db8:ff::1", sport=1000, dport=9)


def ipv6_fragment(src: str, offset_units: int) -> bytes:
    fragment_header = struct.pack("!BBHI", pk.IpProto.UDP, 0, offset_units << 3, 7)
    packet = pk.ipv6(src, "2001:db8:ff::1", 44, fragment_header + b"f" * 16)
    return pk.ethernet(MAC["dst_mac"], MAC["src_mac"], pk.EtherType.IPV6, packet)


@pytest.fixture
def limiter(request: pytest.FixtureRequest, atomics_form: str) -> Iterator[Object]:
    """guard.bpf.o loaded, not attached, in each form: rate 1/s (no refill within a test) and burst 5 unless
    the test is marked `@pytest.mark.parametrize("limiter", [dict(rate=.., burst=.., dry_run=..)], indirect=True)`."""
    opts = {"rate": 1, "burst": 5, "dry_run": False, **getattr(request, "param", {})}
    with load_guard(Limit(opts["rate"], opts["burst"]), dry_run=opts["dry_run"]) as obj:
        assert limit_program(obj).name == ("limit_sources" if atomics_form == "atomics" else "limit_sources_locked")
        yield obj


def totals(obj: Object) -> Counts:
    _, values = obj.maps["counts"].lookup_batch_sum()  # type: ignore[attr-defined]
    return Counts(**{name: int(values[0][name]) for name in Counts.__dataclass_fields__})


def run(obj: Object, frame: bytes, times: int = 1) -> tuple[Any, Counts]:
    """Runs the limiter `times` back to back inside one syscall; the last action and the counters' change."""
    before = totals(obj)
    action = limit_program(obj).test_run(frame, repeat=times).action
    return action, totals(obj) - before


def sources(obj: Object) -> dict[str, tuple[int, int]]:
    keys, values = obj.maps["sources"].lookup_batch()
    return {source_name(k.tobytes()): (int(v["passed"]), int(v["dropped"])) for k, v in zip(keys, values)}


# --- the token bucket, exactly ---

@pytest.mark.parametrize("limiter", [dict(rate=1, burst=50)], indirect=True)
def test_burst_passes_then_everything_drops(limiter):
    action, delta = run(limiter, udp4(), 80)
    assert action is XdpAction.DROP
    assert (delta.passed, delta.dropped, delta.would_drop) == (50, 30, 0)
    assert sources(limiter) == {"192.0.2.1": (50, 30)}


@pytest.mark.parametrize("limiter", [dict(rate=100, burst=100)], indirect=True)
def test_bucket_refills_at_the_rate_up_to_the_burst(limiter):
    start = time.monotonic()  # before the first run: its last packet emptied the bucket after this
    assert run(limiter, udp4(), 150)[1].passed == 100  # the burst, back to back
    time.sleep(0.3)
    _, delta = run(limiter, udp4(), 200)
    elapsed = time.monotonic() - start
    assert 0.3 * 100 - 1 <= delta.passed <= elapsed * 100 + 1
    time.sleep(1.5)  # longer than burst/rate: the bucket is full again, and no fuller
    assert run(limiter, udp4(), 300)[1].passed == 100


def test_each_ipv4_source_has_its_own_bucket(limiter):
    run(limiter, udp4("192.0.2.1"), 20)
    action, delta = run(limiter, udp4("192.0.2.2"), 5)
    assert action is XdpAction.PASS and delta.passed == 5
    assert sources(limiter) == {"192.0.2.1": (5, 15), "192.0.2.2": (5, 0)}


def test_ipv6_sources_share_a_bucket_per_64(limiter):
    run(limiter, udp6("2001:db8::1"), 3)
    _, delta = run(limiter, udp6("2001:db8::2:3:4"), 3)  # same /64: 2 tokens left
    assert (delta.passed, delta.dropped) == (2, 1)
    _, delta = run(limiter, udp6("2001:db8:0:1::1"), 5)  # the next /64
    assert (delta.passed, delta.dropped) == (5, 0)
    assert sources(limiter) == {"2001:db8::/64": (5, 1), "2001:db8:0:1::/64": (5, 0)}


@pytest.mark.parametrize("frame", [
    pk.arp_frame(src_mac=MAC["src_mac"], src_ip="192.0.2.1", target_ip="192.0.2.2"),
    pk.ethernet(MAC["dst_mac"], MAC["src_mac"], 0x88CC, b"\0" * 46),  # LLDP
    pk.arp_frame(src_mac=MAC["src_mac"], src_ip="192.0.2.1", target_ip="192.0.2.2", vlan=7),
], ids=["arp", "lldp", "vlan-arp"])
def test_non_ip_always_passes(limiter, frame):
    action, delta = run(limiter, frame, 100)
    assert action is XdpAction.PASS
    assert (delta.passed, delta.dropped) == (100, 0)
    assert sources(limiter) == {}


def test_fragments_count_against_their_source(limiter):
    later = pk.ethernet(MAC["dst_mac"], MAC["src_mac"], pk.EtherType.IPV4,
                        pk.ipv4("192.0.2.1", "192.0.2.200", pk.IpProto.UDP, b"x" * 16, frag_offset=8))
    first = pk.ethernet(MAC["dst_mac"], MAC["src_mac"], pk.EtherType.IPV4,
                        pk.ipv4("192.0.2.1", "192.0.2.200", pk.IpProto.UDP, b"x" * 16, more_fragments=True))
    run(limiter, first, 2)
    _, delta = run(limiter, later, 5)
    assert (delta.passed, delta.dropped) == (3, 2)
    _, delta = run(limiter, ipv6_fragment("2001:db8::9", 1), 7)
    assert (delta.passed, delta.dropped) == (5, 2)
    assert sources(limiter) == {"192.0.2.1": (5, 2), "2001:db8::/64": (5, 2)}


def test_truncated_ip_headers_share_the_unspecified_source(limiter):
    short, shorter = udp4("192.0.2.1")[:24], udp4("192.0.2.7")[:30]  # the source address is cut off
    assert [run(limiter, frame, 2)[0] for frame in (short, shorter, short)] == [XdpAction.PASS] * 2 + [XdpAction.DROP]
    assert run(limiter, pk.ethernet(MAC["dst_mac"], MAC["src_mac"], pk.EtherType.IPV6, b"\x60\0"))[0] is XdpAction.PASS
    assert sources(limiter) == {"0.0.0.0": (5, 1), "::/64": (1, 0)}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=14, max_size=300))
def test_any_bytes_never_crash_and_non_ip_passes(limiter, frame):
    action, delta = run(limiter, frame)
    assert action in (XdpAction.PASS, XdpAction.DROP)
    assert delta.passed + delta.dropped == 1
    if len(frame) < 14 or frame[12:14] not in (b"\x08\x00", b"\x86\xdd", b"\x81\x00", b"\x88\xa8"):
        assert action is XdpAction.PASS


def test_allow_list_bypasses_the_limit_and_deny_list_wins(limiter):
    control = GuardControl(limiter.maps)
    control.add("allow", ipaddress.ip_network("192.0.2.0/24"))
    control.add("allow", ipaddress.ip_network("2001:db8::/32"))
    _, delta = run(limiter, udp4("192.0.2.1"), 50)
    assert (delta.passed, delta.allowed, delta.dropped) == (50, 50, 0)
    _, delta = run(limiter, udp6("2001:db8::1"), 50)
    assert (delta.passed, delta.allowed) == (50, 50)
    control.add("deny", ipaddress.ip_network("192.0.2.7/32"))
    action, delta = run(limiter, udp4("192.0.2.7"))
    assert action is XdpAction.DROP and (delta.denied, delta.dropped, delta.allowed) == (1, 1, 0)
    action, _ = run(limiter, udp4("198.51.100.1"))  # on neither list: limited, first packet passes
    assert action is XdpAction.PASS
    assert control.listed("allow") == ["192.0.2.0/24", "2001:db8::/32"]
    assert control.unlist(ipaddress.ip_network("192.0.2.7/32")) == ["deny"]
    assert run(limiter, udp4("192.0.2.7"), 50)[1].allowed == 50
    assert sources(limiter) == {"198.51.100.1": (1, 0)}  # listed sources take no bucket


@pytest.mark.parametrize("limiter", [dict(rate=1, burst=5, dry_run=True)], indirect=True)
def test_dry_run_counts_and_drops_nothing(limiter):
    control = GuardControl(limiter.maps)
    action, delta = run(limiter, udp4(), 20)
    assert action is XdpAction.PASS
    assert (delta.passed, delta.dropped, delta.would_drop) == (20, 0, 15)
    control.add("deny", ipaddress.ip_network("192.0.2.0/24"))
    action, delta = run(limiter, udp4(), 3)
    assert action is XdpAction.PASS and (delta.denied, delta.would_drop, delta.dropped) == (3, 3, 0)
    assert sources(limiter) == {"192.0.2.1": (5, 15)}


def test_limit_changes_without_reload(limiter):
    control = GuardControl(limiter.maps)
    assert run(limiter, udp4(), 10)[1].passed == 5
    assert control.set_limit(burst=20) == Limit(1, 20)
    assert run(limiter, udp4(), 30)[1].passed == 15  # the bucket may now hold 20
    control.set_limit(rate=1000)
    # 20 s of debt at 1/s is more than a bucket at 1000/s holds: it counts as empty, not as 20 s.
    assert run(limiter, udp4())[0] is XdpAction.DROP
    time.sleep(0.05)  # 20 ms fill the bucket at the new rate
    start = time.monotonic()
    passed = run(limiter, udp4(), 30)[1].passed
    # The full bucket, and what refilled while the 30 ran (the kernel may reschedule between repeats).
    assert 20 <= passed <= 20 + (time.monotonic() - start) * 1000 + 1


# --- the command, on a veth ---

def guard_command(pair: VethPair, *extra: str) -> subprocess.Popen[str]:
    """`bpfscope guard --json` on the root namespace's end; returns once its first interval is out."""
    proc = subprocess.Popen([*BPFSCOPE, "guard", "--iface", pair.host, "--json", "--interval", "0.2", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()  # type: ignore[union-attr]
    if not first:
        proc.wait(timeout=10)
        pytest.fail(f"bpfscope guard exited early: {proc.stderr.read()}")  # type: ignore[union-attr]
    assert json.loads(first)["total"]["passed"] == 0
    return proc


def stop(proc: subprocess.Popen[str]) -> dict[str, Any]:
    final = finish(proc)[0][-1]
    assert final["final"] is True
    return final


def counted(proc: subprocess.Popen[str], frames: int) -> None:
    """Until the guard has judged `frames` frames: they reach it in the host end's softirq, which a busy machine
    may run after the sender has returned."""
    records_until(proc, lambda r: sum(r["total"][verdict] for verdict in ("passed", "dropped")) >= frames)


def assert_nothing_left(pair: VethPair) -> None:
    link = subprocess.run(["ip", "-d", "link", "show", pair.host], capture_output=True, text=True).stdout
    assert "xdp" not in link
    assert not os.path.exists(tool_pin_dir("guard"))
    assert not os.path.exists(PIN_ROOT) or os.listdir(PIN_ROOT)  # the root goes with the last tool's pins


# Sends from inside the namespace, so the frames arrive at the host end as ingress. They are addressed
# to a MAC nobody has: XDP sees them all, the IP stack drops them as PACKET_OTHERHOST, and no reply to
# the made-up sources is routed out of the machine.
SENDER = """
import json, socket, sys, time
from bpfscope.testing import packets as pk
from bpfscope.testing.netns import send_frames
iface, src_mac, src_ip, pps, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
frame = pk.udp_frame(src_mac=src_mac, dst_mac="02:00:00:00:00:99", src_ip=src_ip, dst_ip="192.0.2.200",
                     sport=1000, dport=9)
start = time.monotonic()
end, sent = start + seconds, 0
if pps == 0:  # as fast as we can
    while time.monotonic() < end:
        sent += send_frames([frame] * 500, iface)
else:  # paced: one socket, so each packet costs a send and nothing more
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as sock:
        sock.bind((iface, 0))
        next_send = start
        while next_send < end:
            time.sleep(max(0.0, next_send - time.monotonic()))
            sent += sock.send(frame) > 0
            next_send += 1 / pps
print(json.dumps({"sent": sent, "seconds": time.monotonic() - start}))
"""
FLOODER, QUIET = "198.51.100.1", "198.51.100.2"


def send(pair: VethPair, src_ip: str, *, pps: float, seconds: float) -> subprocess.Popen[str]:
    return pair.popen([sys.executable, "-c", SENDER, pair.peer, pair.peer_mac, src_ip, str(pps), str(seconds)],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return dict(json.loads(out))


def top(final: dict[str, Any], source: str) -> dict[str, Any]:
    return next((row for row in final["top"] if row["source"] == source), {"passed": 0, "dropped": 0})


RATE, BURST, SECONDS = 500, 100, 2.0


def test_flooder_is_held_to_rate_plus_burst_and_quiet_source_loses_nothing(veth_pair):
    proc = guard_command(veth_pair, "--rate", str(RATE), "--burst", str(BURST))
    try:
        flood, quiet = send(veth_pair, FLOODER, pps=0, seconds=SECONDS), send(veth_pair, QUIET, pps=50, seconds=SECONDS)
        flooded, sent_quietly = result(flood), result(quiet)
        counted(proc, flooded["sent"] + sent_quietly["sent"])
    finally:
        final = stop(proc)
    assert_nothing_left(veth_pair)
    assert final["mode"] in ("native", "generic") and final["total"]["would_drop"] == 0
    assert flooded["sent"] > 3 * RATE * flooded["seconds"], "the flood was too slow to test the limit"
    assert final["total"]["passed"] + final["total"]["dropped"] == flooded["sent"] + sent_quietly["sent"]
    flooder = top(final, FLOODER)
    assert flooder["passed"] <= (RATE * flooded["seconds"] + BURST) * 1.1
    assert flooder["passed"] >= 0.5 * RATE * flooded["seconds"]
    assert flooder["dropped"] == final["total"]["dropped"]  # so the quiet source lost nothing
    assert [row["source"] for row in final["top"]] == [FLOODER]


def test_allowlisted_flooder_passes_everything(veth_pair):
    proc = guard_command(veth_pair, "--rate", "10")
    try:
        allow = subprocess.run([*BPFSCOPE, "guard", "allow", "198.51.100.0/24"], capture_output=True, text=True)
        assert allow.returncode == 0, allow.stderr
        flooded = result(send(veth_pair, FLOODER, pps=0, seconds=1.0))
        counted(proc, flooded["sent"])
    finally:
        final = stop(proc)
    assert final["total"]["dropped"] == 0
    assert final["total"]["allowed"] == final["total"]["passed"] == flooded["sent"]


def test_dry_run_drops_nothing(veth_pair):
    proc = guard_command(veth_pair, "--rate", "10", "--burst", "10", "--dry-run")
    try:
        flooded = result(send(veth_pair, FLOODER, pps=0, seconds=1.0))
        counted(proc, flooded["sent"])
    finally:
        final = stop(proc)
    assert final["dry_run"] is True and final["total"]["dropped"] == 0
    assert final["total"]["passed"] == flooded["sent"]
    assert final["total"]["would_drop"] >= flooded["sent"] - 10 - 10 * 1.5
    assert top(final, FLOODER)["dropped"] == final["total"]["would_drop"]


def bpfscope(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BPFSCOPE, *args], capture_output=True, text=True, timeout=60, check=False)


def test_control_commands_change_the_running_guard(veth_pair):
    proc = guard_command(veth_pair, "--rate", "100", "--burst", "200")
    try:
        assert os.path.isdir(tool_pin_dir("guard"))
        assert bpfscope("guard", "allow", "10.0.0.0/8").returncode == 0
        assert bpfscope("guard", "deny", "2001:db8::/48").returncode == 0
        assert bpfscope("guard", "deny", "10.1.2.3").returncode == 0
        changed = bpfscope("guard", "set", "--rate", "50")
        assert changed.stdout.strip() == "guard: rate 50/s, burst 200 (was 100/s, 200)"
        with RunningGuard() as running:
            assert running.listed("allow") == ["10.0.0.0/8"]
            assert running.listed("deny") == ["10.1.2.3", "2001:db8::/48"]
            assert running.limit == Limit(50, 200)
        assert bpfscope("guard", "unlist", "10.0.0.0/8").stdout.strip() == "guard: 10.0.0.0/8 off the allow list"
        missing = bpfscope("guard", "unlist", "10.0.0.0/8")
        assert missing.returncode == 1 and "on neither list" in missing.stderr
        second = bpfscope("guard", "--iface", veth_pair.host, "--rate", "5")
        assert second.returncode == 1 and "a guard is already running" in second.stderr
        records_until(proc, lambda r: r["rate"] == 50)
    finally:
        final = stop(proc)
    assert (final["rate"], final["burst"]) == (50, 200)
    assert_nothing_left(veth_pair)


def test_kill_9_leaves_pins_that_the_next_guard_clears(veth_pair):
    proc = guard_command(veth_pair, "--rate", "100")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert os.path.isdir(tool_pin_dir("guard"))  # maps pinned, but nobody holds the lock
    orphan = bpfscope("guard", "allow", "10.0.0.0/8")
    assert orphan.returncode == 1
    assert orphan.stderr.strip() == "bpfscope guard: no running guard: start `bpfscope guard --iface X` first"
    proc = guard_command(veth_pair, "--rate", "100")
    assert bpfscope("guard", "allow", "10.0.0.0/8").returncode == 0
    stop(proc)
    assert_nothing_left(veth_pair)


def test_library_guard_reports_its_mode(veth_pair):
    with Guard(veth_pair.host, limit=Limit(10, 10)) as guard:
        assert guard.mode.value in ("native", "generic")
        assert guard.snapshot().counts == Counts()
    assert not os.path.exists(tool_pin_dir("guard"))


# --- bad input: one line, exit != 0, no traceback, nothing attached ---

PROGRAMS = ("limit_sources", "limit_sources_l")  # the kernel keeps 15 bytes of limit_sources_locked


@pytest.mark.parametrize("args, code, expected", [
    (["guard", "allow", "10.0.0.1/8"], 2, "'10.0.0.1/8' is not a CIDR"),
    (["guard", "deny", "10.0.0.300"], 2, "'10.0.0.300' is not a CIDR"),
    (["guard", "--iface", "lo", "--rate", "0"], 2, "argument --rate: '0' must be from 1"),
    (["guard", "--iface", "lo", "--rate", "fast"], 2, "'fast' is not a whole number"),
    (["guard", "--iface", "nosuch0", "--rate", "10"], 1, "no interface 'nosuch0'"),
    (["guard", "--rate", "10"], 1, "give --iface"),
    (["guard", "--iface", "lo"], 1, "give --rate"),
    (["guard", "--iface", "lo", "--rate", "10", "--mode", "native"], 1, "lo has no native XDP"),
    (["guard", "allow", "10.0.0.0/8"], 1, "no running guard: start `bpfscope guard --iface X` first"),
    (["guard", "set", "--rate", "5"], 1, "no running guard"),
    (["guard", "--rate", "5", "allow", "10.0.0.0/8"], 1, "--rate is for running a guard"),
])
def test_bad_input(args, code, expected):
    before = unheld(PROGRAMS)
    result = bpfscope(*args)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert lines[0].startswith("bpfscope guard")
    assert not left_behind(PROGRAMS, before)
    assert not os.path.exists(tool_pin_dir("guard"))
