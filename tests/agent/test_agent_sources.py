"""Each tool through the agent: real traffic or calls, the agent's /metrics checked against what
was sent, and OTLP export of the same metrics to a real OTLP/HTTP endpoint."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from bpfscope.agent.containers import ContainerResolver
from bpfscope.netdev import ifindex
from bpfscope.testing.netns import tc_filters
from bpfscope.tools.execsnoop import ExecSnoop, Filters

from .agentproc import AgentProcess, free_port, xdp_attached
from .test_agent import cgroup2_root, send_to_host
from .test_otlp import Receiver, metrics_of

NAP_C = Path(__file__).parent / "c" / "nap.c"


@pytest.fixture
def pins(bpffs_dir: Path) -> str:
    return str(bpffs_dir / "agent")


def test_guard_counts_what_it_passed_and_dropped(veth_pair, pins, tmp_path):
    config = {"pin_dir": pins, "tools": {"guard": {"interface": veth_pair.host, "rate": 1, "burst": 10}}}
    agent = AgentProcess(config, tmp_path)
    try:
        send_to_host(veth_pair, 200)
        agent.settled("bpfscope_guard_packets_total", 200, interface=veth_pair.host)  # passed or dropped
        passed = agent.value("bpfscope_guard_packets_total", interface=veth_pair.host, verdict="passed")
        dropped = agent.value("bpfscope_guard_packets_total", interface=veth_pair.host, verdict="dropped")
        assert passed + dropped == 200
        assert 10 <= passed <= 12 and dropped >= 188  # a burst of 10, then 1 per second
        # The agent's guard is changed from another shell as a standalone one is, through its pins.
        subprocess.run([sys.executable, "-m", "bpfscope.cli.main", "guard", "--pin-dir", f"{pins}/guard",
                        "allow", f"{veth_pair.peer_ip}/32"], check=True, capture_output=True)
        send_to_host(veth_pair, 50)
        assert agent.settled("bpfscope_guard_list_matches_total", 50, interface=veth_pair.host, list="allow") == 50
        assert agent.value("bpfscope_guard_packets_total", interface=veth_pair.host, verdict="passed") == passed + 50
    finally:
        agent.stop()
    assert agent.proc.returncode == 0, agent.stderr


def test_tcmon_counts_its_detections_and_the_agent_drains_its_ring(veth_pair, pins, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("deny: {ports: [9/udp]}\n")  # what send_to_host sends; not the ICMP errors the host answers
    config = {"pin_dir": pins, "tools": {"tcmon": {"interfaces": [veth_pair.host], "rules": str(rules),
                                                   "event_interval": 3600}}}
    agent = AgentProcess(config, tmp_path)
    try:
        send_to_host(veth_pair, 50)
        ours = {"interface": veth_pair.host}
        # One event for the source, destination and rule; the other 49 held back by the hour's limit.
        assert agent.settled("bpfscope_tcmon_suppressed_events_total", 49, **ours) == 49
        assert agent.value("bpfscope_tcmon_events_total", kind="denied-port", **ours) == 1
        assert agent.value("bpfscope_tcmon_packets_total", **ours) >= 50
        # The event went through the ring, which the agent's reader thread drained.
        assert agent.settled("bpfscope_ringbuf_received_events_total", 1, tool="tcmon") == 1
        assert agent.value("bpfscope_ringbuf_lost_events_total", tool="tcmon") == 0
    finally:
        agent.stop()
    assert agent.proc.returncode == 0, agent.stderr


def test_flows_export_the_top_flows_with_bounded_series(veth_pair, pins, tmp_path):
    config = {"pin_dir": pins, "tools": {"flows": {"interfaces": [veth_pair.host], "top": 2}}}
    agent = AgentProcess(config, tmp_path)
    try:
        for dport, n in ((7001, 30), (7002, 20), (7003, 10)):
            send_to_host(veth_pair, n, dport=dport)
        agent.settled("bpfscope_flow_packets_total", 30 + 20, direction="in")  # the top two, once all are in
        samples = {dict(labels)["local_port"]: value for (name, labels), value in agent.metrics().items()
                   if name == "bpfscope_flow_packets_total" and dict(labels)["direction"] == "in"}
        assert samples == {"7001": 30, "7002": 20}, "the two largest flows, exactly what was sent"
        assert agent.value("bpfscope_flows", interface=veth_pair.host) >= 3
    finally:
        agent.stop()


def test_flows_on_clsact_keep_their_leases_where_the_config_says(veth_pair, pins, tmp_path):
    leases = tmp_path / "leases"
    config = {"pin_dir": pins, "tc_leases": str(leases),
              "tools": {"flows": {"interfaces": [veth_pair.host], "mode": "clsact"}}}
    agent = AgentProcess(config, tmp_path)
    try:
        assert {direction for direction, _ in tc_filters(veth_pair.host)} == {"ingress", "egress"}
        assert [name.split("-")[0] for name in os.listdir(leases)] == [str(ifindex(veth_pair.host))] * 2
    finally:
        agent.stop()
    assert agent.proc.returncode == 0, agent.stderr
    assert tc_filters(veth_pair.host) == set()
    assert os.listdir(leases) == []


def test_funclatency_is_a_prometheus_histogram(pins, tmp_path):
    binary = tmp_path / "nap.v1"  # a dot, as in libc.so.6: bpffs refuses one in a pin's name
    subprocess.run(["gcc", "-O1", "-o", str(binary), str(NAP_C)], check=True)
    config = {"pin_dir": pins, "tools": {"funclatency": [{"function": f"{binary}:nap"}]}}
    agent = AgentProcess(config, tmp_path)
    try:
        out = subprocess.run([str(binary), "1500", "5"], check=True, timeout=30, capture_output=True, text=True)
        measured = [int(line) for line in out.stdout.split()]  # each call, timed inside nap()
        labels = {"target": str(binary), "symbol": "nap"}
        assert agent.value("bpfscope_function_latency_seconds_count", **labels) == 5
        # The kernel times each call from just before to just after what nap() measured, so every call
        # lies above the largest log2 bound under the shortest measured, and below the first bound at or
        # past the longest (plus a millisecond for the probes and a busy machine).
        below = 2 ** (min(measured).bit_length() - 1)
        above = 2 ** ((max(measured) + 1_000_000).bit_length())
        assert agent.value("bpfscope_function_latency_seconds_bucket", le=str(below / 1e9), **labels) == 0
        assert agent.value("bpfscope_function_latency_seconds_bucket", le=str(above / 1e9), **labels) == 5
        seconds = agent.value("bpfscope_function_latency_seconds_sum", **labels)
        assert sum(measured) / 1e9 <= seconds < (sum(measured) + 5 * 1_000_000) / 1e9
    finally:
        agent.stop()


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[int]:
    """python -m http.server on 127.0.0.1, serving /users/1 and /users/2; yields its port."""
    port = free_port()
    (tmp_path / "users").mkdir()
    for name in ("1", "2"):
        (tmp_path / "users" / name).write_text("user\n")
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield port
    finally:
        server.terminate()
        server.wait(timeout=10)


def get(port: int, *paths: str) -> None:
    for path in paths:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).read()
        except urllib.error.HTTPError as exc:
            assert exc.code == 404


def wait_for_requests(agent: AgentProcess, n: int) -> None:
    deadline = time.monotonic() + 10
    while agent.value("bpfscope_http_requests_total", side="server") < n and time.monotonic() < deadline:
        time.sleep(0.2)


def test_http_red_metrics_by_route_and_status_class(http_server, pins, tmp_path):
    port = http_server
    agent = AgentProcess({"pin_dir": pins, "tools": {"http": {"port": port, "tls": False}}}, tmp_path)
    try:
        get(port, "/users/1", "/users/2?x=1", "/missing")
        wait_for_requests(agent, 3)
        server_side = {"side": "server", "method": "GET"}
        assert agent.value("bpfscope_http_requests_total", route="/users/:id", status_class="2xx", **server_side) == 2
        assert agent.value("bpfscope_http_requests_total", route="/missing", status_class="4xx", **server_side) == 1
        assert agent.value("bpfscope_http_request_errors_total", side="server") == 0
        assert agent.value("bpfscope_http_request_duration_seconds_count", route="/users/:id", **server_side) == 2
        assert agent.value("bpfscope_ringbuf_lost_events_total", tool="http") == 0
    finally:
        agent.stop()


def test_http_series_carry_on_across_a_restart(http_server, pins, tmp_path):
    port = http_server
    config = {"pin_dir": pins, "tools": {"http": {"port": port, "tls": False}}}
    route = {"side": "server", "route": "/users/:id", "status_class": "2xx"}
    first = AgentProcess(config, tmp_path, "--keep-pins")
    try:
        get(port, "/users/1", "/users/2")
        wait_for_requests(first, 2)
        assert first.value("bpfscope_http_requests_total", **route) == 2
    finally:
        first.stop()
    second = AgentProcess(config, tmp_path)
    try:
        assert second.value("bpfscope_http_requests_total", **route) == 2
        assert second.value("bpfscope_http_request_duration_seconds_count", **route) == 2
        get(port, "/users/1")
        wait_for_requests(second, 3)
        assert second.value("bpfscope_http_requests_total", **route) == 3
    finally:
        second.stop()
    assert second.proc.returncode == 0, second.stderr


def test_otlp_export_of_the_agents_metrics(veth_pair, pins, tmp_path):
    receiver = Receiver()
    receiver.thread.start()
    try:
        config = {"pin_dir": pins, "tools": {"packets": {"interfaces": [veth_pair.host]}},
                  "otlp": {"endpoint": f"{receiver.url}/v1/metrics", "interval": 1}}
        agent = AgentProcess(config, tmp_path)
        try:
            send_to_host(veth_pair, 25)
            seen = receiver.wait_for(1, timeout=10)
            assert seen >= 1
            deadline = time.monotonic() + 10
            udp = 0.0
            while time.monotonic() < deadline and udp != 25:
                _, _, request = receiver.requests[-1]
                points = metrics_of(request)["bpfscope_ip_packets"].sum.data_points
                udp = sum(p.as_int or p.as_double for p in points
                          if {a.key: a.value.string_value for a in p.attributes}.get("protocol") == "udp")
                time.sleep(0.3)
            assert udp == 25
        finally:
            agent.stop()
        assert agent.proc.returncode == 0, agent.stderr
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "agent"


def test_a_custom_program_through_the_agent(pins, tmp_path):
    config = {"pin_dir": pins, "tools": {}, "custom": [{"object": str(EXAMPLES / "read_sizes.bpf.c")}]}
    agent = AgentProcess(config, tmp_path)
    try:
        data = tmp_path / "data"
        data.write_bytes(b"x" * 100)
        for _ in range(3):
            subprocess.run(["cat", str(data)], check=True, capture_output=True)
        # Each cat reads 100 bytes, then 0 at the end: slots 6 (64-127) and 0.
        assert agent.value("bpfscope_read_size_bytes_bucket", comm="cat", le="127.0") >= 6
        assert agent.value("bpfscope_read_size_bytes_sum", comm="cat") >= 300
    finally:
        agent.stop()
    assert agent.proc.returncode == 0, agent.stderr


def test_check_reads_custom_metrics_against_btf_without_loading(tmp_path):
    (tmp_path / "read_sizes.bpf.c").write_text((EXAMPLES / "read_sizes.bpf.c").read_text())
    (tmp_path / "read_sizes.yaml").write_text((EXAMPLES / "read_sizes.yaml").read_text().replace(
        "map: read_sizes", "map: no_such_map"))
    (tmp_path / "agent.yaml").write_text("tools: {}\ncustom: [{object: read_sizes.bpf.c}]\n")
    result = subprocess.run([sys.executable, "-m", "bpfscope.cli.main", "agent", "--check", "--config",
                             str(tmp_path / "agent.yaml")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no_such_map" in lines[0] and "read_sizes" in lines[0], result.stderr


def test_a_reload_with_a_broken_custom_yaml_keeps_everything_running(pins, tmp_path):
    program = tmp_path / "read_sizes.bpf.c"
    program.write_text((EXAMPLES / "read_sizes.bpf.c").read_text())
    metrics = tmp_path / "read_sizes.yaml"
    metrics.write_text((EXAMPLES / "read_sizes.yaml").read_text())
    config = {"pin_dir": pins, "tools": {"opens": True}, "custom": [{"object": str(program)}]}
    agent = AgentProcess(config, tmp_path)
    try:
        metrics.write_text(metrics.read_text().replace("map: read_sizes", "map: no_such_map"))
        agent.proc.send_signal(signal.SIGHUP)
        agent.said("reload failed")
        before = agent.value("bpfscope_file_opens_total")
        subprocess.run(["cat", str(program)], check=True, capture_output=True)
        assert agent.value("bpfscope_file_opens_total") > before, "opens still counted"
        assert agent.value("bpfscope_read_size_bytes_count", comm="cat") >= 1, "the custom program still runs"
    finally:
        agent.stop()
    assert "reload failed, still running the previous config" in agent.stderr and "no_such_map" in agent.stderr


def test_sigterm_detaches_within_a_second_even_if_the_collector_hangs(veth_pair, pins, tmp_path):
    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(8)  # accepts connections, never answers
    try:
        config = {"pin_dir": pins, "tools": {"packets": {"interfaces": [veth_pair.host]}},
                  "otlp": {"endpoint": f"http://127.0.0.1:{hanging.getsockname()[1]}/v1/metrics", "interval": 1}}
        agent = AgentProcess(config, tmp_path)
        hanging.settimeout(10)
        hanging.accept()[0].close()  # an export is under way, waiting on the collector ... that never answers
        took = agent.stop()
        assert agent.proc.returncode == 0, agent.stderr
        assert took < 1.0, f"{took:.2f} s from SIGTERM to exit"
        assert not xdp_attached(veth_pair.host)
    finally:
        hanging.close()


def test_exec_counts_of_removed_cgroups_make_room(bpffs_dir, tmp_path):
    """With the count map nearly full, the counts of cgroups that are gone are deleted; live ones stay."""
    scope = cgroup2_root() / f"bpfscope-test-{tmp_path.name[-8:]}.scope"
    scope.mkdir()
    # Counting only the execs inside the scope: a map of ten is this test's alone, whatever else the machine runs.
    snoop = ExecSnoop(filters=Filters(cgroup_id=scope.stat().st_ino), count=True, pin_dir=str(bpffs_dir / "execs"),
                      max_counts=10)
    snoop.containers = ContainerResolver(10)  # as the agent gives it (ToolSource)
    snoop.open()
    try:
        programs = []
        for i in range(9):  # nine comms, so nine entries: the map is nine tenths full
            programs.append(tmp_path / f"gone{i}")
            shutil.copy("/bin/true", programs[-1])
        runs = "; ".join(str(p) for p in programs)
        subprocess.run(["/bin/sh", "-c", f"echo $$ > {scope}/cgroup.procs; {runs}"], check=True)
        scope_id = os.stat(scope).st_ino
        assert sum(row.cgroup_id == scope_id for row in snoop.counts()) == 9
        for _ in range(50):
            try:
                scope.rmdir()
                break
            except OSError:
                time.sleep(0.1)  # the shell's exit reaches the cgroup a moment later
        exported = {s.labels["comm"] for family in snoop.metrics() for s in family.samples if "comm" in s.labels}
        assert not any(comm.startswith("gone") for comm in exported)
        assert not any(row.cgroup_id == scope_id for row in snoop.counts()), "deleted from the kernel's map"
    finally:
        snoop.close()
        if scope.exists():
            scope.rmdir()
