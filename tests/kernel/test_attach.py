"""Every attach kind on the real kernel: the hook fires exactly as often as the test makes it, and
closing the link (or unpinning it) detaches."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from completeness import assert_counted

from bpfscope.errors import BpfscopeError
from bpfscope.features import Feature
from bpfscope.link import TC_LEASES_ENV, Link, remove_stale_tc_filters
from bpfscope.netdev import ifindex
from bpfscope.object import ObjectSpec, load, tool_object
from bpfscope.program import TcDirection, TcMode, XdpMode
from bpfscope.testing import packets as pk
from bpfscope.testing.netns import send_frames, tc_filters

CALLS = 250


@pytest.fixture
def obj(test_object):
    spec = ObjectSpec.open(test_object("attach_kinds"))
    spec.rodata["cfg_tgid"] = os.getpid()
    with spec.load() as loaded:
        yield loaded


def hits(obj, name: str) -> int:
    return int(obj.maps["hits"].sum(int(obj.exported_type("hits_key").python_type[f"HIT_{name}"])))


def test_tracepoint_counts_each_syscall(obj):
    with obj.programs["count_getppid"].attach_tracepoint("syscalls", "sys_enter_getppid"):
        for _ in range(CALLS):
            os.getppid()
    for _ in range(10):
        os.getppid()  # detached: not counted
    # Each call, but for runs the kernel skipped (another BPF program was running on that CPU).
    assert_counted(hits(obj, "TRACEPOINT"), CALLS, missed=obj.programs["count_getppid"].missed_runs)


def test_missing_tracepoint_is_one_clear_error(obj):
    with pytest.raises(BpfscopeError, match="no such tracepoint"):
        obj.programs["count_getppid"].attach_tracepoint("syscalls", "sys_enter_no_such_call")


def test_uprobe_and_uretprobe_on_a_library_by_name(obj):
    with obj.programs["count_entry"].attach_uprobe("libc", "getppid"), \
         obj.programs["count_return"].attach_uprobe("libc", "getppid", retprobe=True):
        for _ in range(CALLS):
            os.getppid()
    assert_counted(hits(obj, "UPROBE"), CALLS, missed=obj.programs["count_entry"].missed_runs)
    assert_counted(hits(obj, "URETPROBE"), CALLS, missed=obj.programs["count_return"].missed_runs)


def test_uprobe_only_in_the_given_pid(obj):
    child = subprocess.Popen(["sleep", "5"])
    try:
        with obj.programs["count_entry"].attach_uprobe("libc", "getppid", pid=child.pid):
            for _ in range(CALLS):
                os.getppid()
    finally:
        child.kill()
        child.wait()
    assert hits(obj, "UPROBE") == 0


def test_uprobe_missing_symbol_and_binary(obj):
    with pytest.raises(BpfscopeError, match="symbol 'no_such_function' not found"):
        obj.programs["count_entry"].attach_uprobe("libc", "no_such_function")
    with pytest.raises(BpfscopeError, match="no binary or library"):
        obj.programs["count_entry"].attach_uprobe("/nonexistent/binary", "main")


def test_perf_event_cpu_clock_fires_on_every_cpu(obj):
    with obj.programs["count_tick"].attach_perf_event(frequency=1000) as group:
        assert len(group.links) == os.cpu_count()
        time.sleep(0.3)
    first = hits(obj, "PERF_EVENT")
    time.sleep(0.1)
    assert first > 0
    assert hits(obj, "PERF_EVENT") == first  # detached with the group


@pytest.mark.parametrize("mode", [pytest.param(TcMode.TCX, marks=pytest.mark.requires(Feature.TCX)), TcMode.CLSACT])
def test_tc_egress_counts_frames_sent(obj, veth_pair, mode):
    frames = [pk.udp_frame(src_mac=veth_pair.host_mac, dst_mac=veth_pair.peer_mac, src_ip=veth_pair.host_ip,
                           dst_ip=veth_pair.peer_ip, sport=1000 + i, dport=9) for i in range(CALLS)]
    with obj.programs["count_tc"].attach_tc(veth_pair.host, direction=TcDirection.EGRESS, mode=mode) as link:
        assert f"({mode.value})" in link.description
        assert send_frames(frames, veth_pair.host) == CALLS
        time.sleep(0.2)
    counted = hits(obj, "TC")
    send_frames(frames[:10], veth_pair.host)
    time.sleep(0.1)
    assert counted == CALLS
    assert hits(obj, "TC") == CALLS  # detached


# Attaches count_tc to argv[1]'s ingress with clsact and holds it until stdin closes.
HOLD_CLSACT = """
import sys
from bpfscope.object import load
from bpfscope.program import TcDirection, TcMode
with load(sys.argv[2]) as obj:
    with obj.programs["count_tc"].attach_tc(sys.argv[1], direction=TcDirection.INGRESS, mode=TcMode.CLSACT):
        print("attached", flush=True)
        sys.stdin.read()
"""


def test_stale_clsact_filters_are_only_those_of_ended_processes(veth_pair, test_object, tmp_path, monkeypatch):
    leases = tmp_path / "leases"  # made at the first attach
    monkeypatch.setenv(TC_LEASES_ENV, str(leases))  # read by the children and by remove_stale_tc_filters()

    def ours() -> list[str]:
        return [name for name in os.listdir(leases) if name.startswith(f"{ifindex(veth_pair.host)}-")]

    def hold() -> subprocess.Popen[str]:
        child = subprocess.Popen([sys.executable, "-c", HOLD_CLSACT, veth_pair.host, str(test_object("attach_kinds"))],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None and child.stdout.readline() == "attached\n"
        return child

    alive = hold()
    try:
        before = tc_filters(veth_pair.host)
        assert len(ours()) == 1  # the lease is where $BPFSCOPE_TC_LEASES says
        killed = hold()
        (_, killed_program), = tc_filters(veth_pair.host) - before
        killed.kill()
        killed.wait(timeout=10)
        assert len(tc_filters(veth_pair.host)) == 2  # a cls_bpf filter outlives its process
        removed = remove_stale_tc_filters()
        assert f"the tc ingress filter of program {killed_program} on {veth_pair.host}" in removed
        assert tc_filters(veth_pair.host) == before  # the live process's filter stays
    finally:
        alive.communicate("", timeout=30)
    assert tc_filters(veth_pair.host) == set()  # closed: detached, and its lease gone too
    assert ours() == []


def test_xdp_native_on_veth_and_not_on_lo(veth_pair):
    with load(tool_object("packets")) as packets:
        program = packets.programs["count_packets"]
        with program.attach_xdp(veth_pair.host, mode=XdpMode.NATIVE) as link:
            assert link.mode is XdpMode.NATIVE
        with program.attach_xdp(veth_pair.host) as link:
            assert link.mode is XdpMode.NATIVE  # auto prefers the driver
        with pytest.raises(BpfscopeError, match="no native XDP"):
            program.attach_xdp("lo", mode=XdpMode.NATIVE)


def test_second_xdp_program_on_one_interface_is_refused_clearly(veth_pair):
    with load(tool_object("packets")) as first, load(tool_object("packets")) as second:
        with first.programs["count_packets"].attach_xdp(veth_pair.host):
            with pytest.raises(BpfscopeError, match="another XDP program is attached"):
                second.programs["count_packets"].attach_xdp(veth_pair.host)


def xdp_attached(iface: str) -> bool:
    out = subprocess.run(["ip", "-d", "link", "show", iface], capture_output=True, text=True, check=True).stdout
    return "xdp" in out


def test_pinned_link_outlives_its_fd_until_unpinned(veth_pair, bpffs_dir):
    path = f"{bpffs_dir}/xdp_link"
    with load(tool_object("packets")) as packets:
        with packets.programs["count_packets"].attach_xdp(veth_pair.host) as link:
            link.pin(path)
    assert xdp_attached(veth_pair.host)  # the pin holds it after every fd is closed
    Link.unpin(path)
    deadline = time.monotonic() + 5
    while xdp_attached(veth_pair.host) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not xdp_attached(veth_pair.host)
