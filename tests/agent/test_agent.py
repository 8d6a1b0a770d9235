"""`bpfscope agent` end to end: a real agent process, real packets across a veth, a real Prometheus
server scraping it, and the kernel's own view (bpftool, /proc) of what it left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from loaded import left_behind, still_loaded, unheld

from bpfscope.agent import caps
from bpfscope.testing import packets as pk
from bpfscope.testing.netns import VethPair

from .agentproc import BPFSCOPE as BPFSCOPE_CMD
from .agentproc import AgentProcess, Prometheus, status_caps, xdp_attached

TOOL_PROGRAMS = ("count_packets", "track_ingress", "track_egress", "exit_openat", "report_execve")
UDP_IN = "bpfscope_ip_packets_total"


def send_to_host(pair: VethPair, n: int, dport: int = 9) -> None:
    """`n` UDP frames from the namespace's end to the host's: what the host's XDP program sees."""
    code = (
        "from bpfscope.testing import packets as pk\n"
        "from bpfscope.testing.netns import send_frames\n"
        f"f = pk.udp_frame(src_mac={pair.peer_mac!r}, dst_mac={pair.host_mac!r}, src_ip={pair.peer_ip!r},"
        f" dst_ip={pair.host_ip!r}, sport=40000, dport={dport}, payload=b'x' * 18)\n"
        f"assert send_frames([f] * {n}, {pair.peer!r}) == {n}\n"
    )
    pair.exec([sys.executable, "-c", code], check=True)


def udp_frame_bytes() -> int:
    return len(pk.udp_frame(src_mac="02:00:00:00:00:01", dst_mac="02:00:00:00:00:02", src_ip="10.0.0.1",
                            dst_ip="10.0.0.2", sport=40000, dport=9, payload=b"x" * 18))


@pytest.fixture
def pins(bpffs_dir: Path) -> str:
    return str(bpffs_dir / "agent")


def packets_config(pair: VethPair, pins: str, **tools: object) -> dict[str, object]:
    return {"pin_dir": pins, "tools": {"packets": {"interfaces": [pair.host]}, **tools}}


def test_prometheus_scrapes_the_counts_sent(veth_pair, pins, tmp_path):
    agent = AgentProcess(packets_config(veth_pair, pins), tmp_path)
    prometheus = Prometheus([f"127.0.0.1:{agent.port}"])
    try:
        sent = 300
        send_to_host(veth_pair, sent)
        iface = veth_pair.host
        assert prometheus.wait_for(f'bpfscope_ip_packets_total{{interface="{iface}",protocol="udp"}}', sent) == sent
        assert prometheus.wait_for(f'bpfscope_packets_total{{interface="{iface}",protocol="ipv4"}}', sent) == sent
        expected_bytes = sent * udp_frame_bytes()
        assert prometheus.wait_for(f'bpfscope_packet_bytes_total{{interface="{iface}",protocol="ipv4"}}',
                                   expected_bytes) == expected_bytes
        assert prometheus.wait_for('sum(bpfscope_agent_info)', 1) == 1
    finally:
        prometheus.stop()
        agent.stop()


def test_counters_carry_on_across_a_restart_with_kept_pins(veth_pair, pins, tmp_path):
    config = packets_config(veth_pair, pins)
    first = AgentProcess(config, tmp_path, "--keep-pins")
    try:
        send_to_host(veth_pair, 100)
        assert first.settled(UDP_IN, 100, interface=veth_pair.host, protocol="udp") == 100
    finally:
        first.stop()
    assert first.proc.returncode == 0, first.stderr
    assert os.path.isdir(pins) and os.listdir(pins), "--keep-pins left the counters pinned"
    assert not xdp_attached(veth_pair.host), "a kept pin is a map, not an attachment"

    second = AgentProcess(config, tmp_path)
    try:
        assert second.value("bpfscope_ip_packets_total", interface=veth_pair.host, protocol="udp") == 100
        send_to_host(veth_pair, 50)
        assert second.settled(UDP_IN, 150, interface=veth_pair.host, protocol="udp") == 150
    finally:
        second.stop()
    assert second.proc.returncode == 0, second.stderr
    assert not os.path.exists(pins), "without --keep-pins the agent removes its pins at exit"


def test_sigterm_detaches_within_a_second(veth_pair, pins, tmp_path):
    agent = AgentProcess(packets_config(veth_pair, pins, opens=True, execs=True), tmp_path)
    assert xdp_attached(veth_pair.host)
    its_programs = agent.programs()
    took = agent.stop()
    assert agent.proc.returncode == 0, agent.stderr
    assert took < 1.0, f"the agent took {took:.2f} s to exit after SIGTERM"
    assert not xdp_attached(veth_pair.host)
    assert its_programs and not still_loaded(its_programs)


def test_sighup_reloads_without_losing_counts(veth_pair, pins, tmp_path):
    agent = AgentProcess(packets_config(veth_pair, pins), tmp_path)
    try:
        send_to_host(veth_pair, 40)
        assert agent.value("bpfscope_file_opens_total") == 0  # no opens counted: not in this config
        agent.rewrite(packets_config(veth_pair, pins, opens=True))
        agent.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while agent.value("bpfscope_file_opens_total") == 0 and time.monotonic() < deadline:
            with open("/etc/hostname"):
                pass
            time.sleep(0.1)
        assert agent.value("bpfscope_file_opens_total") > 0, "the reloaded config's opens are counted"
        assert agent.settled(UDP_IN, 40, interface=veth_pair.host, protocol="udp") == 40
        send_to_host(veth_pair, 2)
        assert agent.settled(UDP_IN, 42, interface=veth_pair.host, protocol="udp") == 42
    finally:
        agent.stop()
    assert "reloaded" in agent.stderr


def test_a_reload_that_fails_keeps_the_running_config(veth_pair, pins, tmp_path):
    agent = AgentProcess(packets_config(veth_pair, pins), tmp_path)
    try:
        agent.rewrite({"pin_dir": pins, "tools": {"packets": {"interfaces": ["bpfscope-nope0"]}}})
        agent.proc.send_signal(signal.SIGHUP)
        agent.said("reload failed")
        assert agent.proc.poll() is None
        send_to_host(veth_pair, 5)
        assert agent.settled(UDP_IN, 5, interface=veth_pair.host, protocol="udp") == 5
    finally:
        agent.stop()
    assert "reload failed" in agent.stderr and "bpfscope-nope0" in agent.stderr


def test_capabilities_are_dropped_after_attaching(veth_pair, pins, tmp_path):
    agent = AgentProcess(packets_config(veth_pair, pins), tmp_path)
    try:
        threads = os.listdir(f"/proc/{agent.pid}/task")
        assert len(threads) >= 2  # the main thread and the HTTP server's, at least
        for tid in threads:  # capabilities are per thread: every one of them dropped its own
            held = status_caps(agent.pid, tid)
            assert held["CapEff"] == 0, f"thread {tid}: CapEff {held['CapEff']:#x}"
            assert held["CapPrm"] == held["CapBnd"] == sum(1 << c for c in caps.RELOAD_CAPS)
        send_to_host(veth_pair, 3)  # and it still reads its maps
        assert agent.settled(UDP_IN, 3, interface=veth_pair.host, protocol="udp") == 3
    finally:
        agent.stop()
    assert agent.proc.returncode == 0, agent.stderr


def test_keep_caps_keeps_those_in_effect(veth_pair, pins, tmp_path):
    agent = AgentProcess(packets_config(veth_pair, pins), tmp_path, "--keep-caps", "CAP_SYSLOG")
    try:
        assert status_caps(agent.pid)["CapEff"] == 1 << caps.CAPABILITIES["CAP_SYSLOG"]
    finally:
        agent.stop()


def test_execs_are_labelled_with_their_container(pins, tmp_path):
    container = "0123456789abcdef" * 4
    pod = "5f0c6a7e-1b2c-4d3e-8f90-a1b2c3d4e5f6"
    pod_dir = cgroup2_root() / "kubepods.slice/kubepods-besteffort.slice" / \
        f"kubepods-besteffort-pod{pod.replace('-', '_')}.slice"
    scope = pod_dir / f"cri-containerd-{container}.scope"
    scope.mkdir(parents=True)
    agent = AgentProcess({"pin_dir": pins, "tools": {"execs": True}}, tmp_path)
    try:
        runs = 7
        script = f"echo $$ > {scope}/cgroup.procs; i=0; while [ $i -lt {runs} ]; do /bin/true; i=$((i+1)); done"
        subprocess.run(["/bin/sh", "-c", script], check=True)
        assert agent.value("bpfscope_execs_total", comm="true", container=container, pod=pod) == runs
        assert agent.value("bpfscope_exec_failures_total", comm="true", container=container) == 0
    finally:
        agent.stop()
        for d in (scope, pod_dir, pod_dir.parent, pod_dir.parent.parent):
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)  # the shell's exit reaches the cgroup a moment later


def cgroup2_root() -> Path:
    """Where cgroup2 is mounted: /sys/fs/cgroup, or /sys/fs/cgroup/unified beside v1 controllers."""
    with open("/proc/mounts") as mounts:
        targets = [line.split()[1] for line in mounts if line.split()[2] == "cgroup2"]
    assert targets, "no cgroup2 mount: execs cannot be told apart by container"
    return Path("/sys/fs/cgroup" if "/sys/fs/cgroup" in targets else targets[0])


BAD_CONFIGS = {
    "tools:\n  flows: {top: many}\n": "tools.flows.top",
    "tools:\n  packets: {interfaces: [lo]}\n  opnes: {}\n": "tools.opnes",
    "listen: nowhere\ntools: {opens: {}}\n": "listen",
    "tools:\n  guard: {interface: lo}\n": "tools.guard.rate",
    "tools: {packets: {interfaces: [lo]}}\npin_dir: /tmp/pins\n": "pin_dir",
    "tools: {opens: {}}\npin_dir: /sys/fs/bpf/\n": "pin_dir: must be a directory of the agent's own",
    "tools:\n  opens: {}\n  8080: x\n": "tools.8080",
    "tools: {opens: {}}\ntc_leases: run/bpfscope\n": "tc_leases: must be an absolute directory",
    "tools:\n  funclatency: [{function: 'libc:free'}, {function: 'libc:free', pid: 1}]\n":
        "tools.funclatency[1]",
    "tools: {}\n": "tools",
    "tools: [\n": "agent.yaml:2",
    "tools:\n  funclatency: [{function: libc}]\n": "tools.funclatency[0].function",
    "tools:\n  funclatency: [{target: libc, symbol: free}]\n": "tools.funclatency[0].function: is required",
    "tools:\n  packets: {interfaces: [bpfscope-nope0]}\n": "bpfscope-nope0",
    "tools:\n  opens: {}\ncustom: [{object: missing.bpf.c}]\n": "custom[0].object",
}


@pytest.mark.parametrize("text,field", BAD_CONFIGS.items(), ids=list(BAD_CONFIGS.values()))
def test_a_bad_config_is_one_line_naming_the_field(text, field, tmp_path):
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    before = unheld(TOOL_PROGRAMS)
    result = subprocess.run([sys.executable, "-m", "bpfscope.cli.main", "agent", "--config", str(path),
                             "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert not left_behind(TOOL_PROGRAMS, before)


def test_without_root_it_says_what_it_needs(tmp_path):
    result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                             *BPFSCOPE_CMD, "agent", "--listen", "127.0.0.1:0", "--duration", "1"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "bpfscope agent: the agent needs root, or CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and CAP_SYS_ADMIN; "
        "this process lacks CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and CAP_SYS_ADMIN"]


def test_the_default_config_needs_no_file():
    result = subprocess.run([*BPFSCOPE_CMD, "agent", "--check"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("default config: ok: packets(") and "opens, execs" in result.stdout


def test_kill_9_leaves_nothing_attached_and_the_next_agent_carries_on(veth_pair, pins, tmp_path):
    config = packets_config(veth_pair, pins, opens=True, execs=True)
    first = AgentProcess(config, tmp_path)
    send_to_host(veth_pair, 30)
    assert first.settled(UDP_IN, 30, interface=veth_pair.host, protocol="udp") == 30
    its_programs = first.programs()
    first.kill()
    # The kernel releases a dead process's links from a worker, a moment after; then their programs.
    assert its_programs and not still_loaded(its_programs)
    assert not xdp_attached(veth_pair.host)
    second = AgentProcess(config, tmp_path)  # the flock died with the first; its pins are taken over
    try:
        assert second.value("bpfscope_ip_packets_total", interface=veth_pair.host, protocol="udp") == 30
    finally:
        second.stop()
    assert second.proc.returncode == 0, second.stderr


def test_pins_not_of_the_agents_making_stay(veth_pair, pins, tmp_path):
    """A pin directory may hold another tool's pins: the agent removes only its own."""
    foreign = Path(pins) / "other_tool"
    foreign.mkdir(parents=True)
    subprocess.run(["bpftool", "map", "create", str(foreign / "m"), "type", "array", "key", "4", "value", "4",
                    "entries", "1", "name", "other_tool"], check=True)
    agent = AgentProcess(packets_config(veth_pair, pins), tmp_path)
    assert (foreign / "m").exists(), "not removed as a stale source of the agent's"
    agent.stop()
    assert agent.proc.returncode == 0, agent.stderr
    assert (foreign / "m").exists() and os.listdir(pins) == ["other_tool"]
