"""deploy/Dockerfile's image, built with podman and run with the DaemonSet's own pod spec (security context,
capabilities, host namespaces, volumes, limits): a real Prometheus scrapes the agent in it and PromQL gives
back exactly the traffic and execs the test made; flows on clsact works in it, and the filters of a container
killed with SIGKILL are removed when the next one starts."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Callable

import pytest
import yaml

from bpfscope import MapType
from bpfscope.agent import caps
from bpfscope.link import DEFAULT_TC_LEASES, TC_LEASES_ENV
from bpfscope.mounts import ensure_bpffs
from bpfscope.netdev import ifindex
from bpfscope.testing.netns import VethPair, tc_filters
from bpfscope.testing.plugin import BPFFS_TEST_PREFIX
from tests.agent.agentproc import Prometheus, free_port
from tests.agent.test_agent import send_to_host

from .podman import ULIMITS, Podman, quantity, run_options

# The largest node the DaemonSet's memory limit is meant to serve (deploy/README.md).
NODE_CPUS = 64
# Map types whose values are kept once per possible CPU.
_PER_CPU_MAPS = {MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_PERCPU_HASH}


def _container_name(what: str) -> str:
    return f"bpfscope-test-{secrets.token_hex(4)}-{what}"


def _wait(condition: Callable[[], Any], what: str, *, timeout: float = 60,
          alive: Callable[[], bool] = lambda: True) -> Any:
    """Polls `condition` until it returns something true; fails saying `what` did not happen."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if not alive():
            pytest.fail(f"{what}: the container stopped first")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.2)


def _port(container: dict[str, Any]) -> int:
    (metrics,) = container["ports"]
    return int(metrics["containerPort"])


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _serves(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return {key: value.strip() for key, _, value in (line.partition(":") for line in f)}


def _capability_bits(names: list[str]) -> int:
    return sum(1 << caps.CAPABILITIES[f"CAP_{name}"] for name in names)


# --- the image -------------------------------------------------------------------------------------------


def test_the_image_runs_bpfscope_without_a_compiler(podman: Podman, image: str, container: dict[str, Any]) -> None:
    (inspect,) = json.loads(podman("image", "inspect", image).stdout)
    assert inspect["Config"]["Entrypoint"] == ["bpfscope", "agent"]
    assert f"{_port(container)}/tcp" in inspect["Config"]["ExposedPorts"]
    probe = podman("run", "--rm", "--no-healthcheck", *ULIMITS, "--entrypoint", "sh", image, "-c",
                   "! command -v clang && bpfscope --version && bpfscope agent --check --config "
                   "/etc/bpfscope/agent.yaml")
    assert "bpfscope " in probe.stdout and "ok" in probe.stdout


# --- the agent, as the DaemonSet runs it -----------------------------------------------------------------


@dataclass
class Agent:
    name: str
    pid: int
    port: int
    pair: VethPair
    prometheus: Prometheus


@pytest.fixture(scope="module")
def agent(podman: Podman, image: str, pod: dict[str, Any], container: dict[str, Any],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    """The agent in the image with the DaemonSet's pod spec, its ConfigMap replaced by a config that watches a
    veth of the test's (never the node's main interface) and pins under a bpffs directory of the test's."""
    # The manifest's port where it is free here, so that the image's HEALTHCHECK reaches the agent.
    port = _port(container) if _port_is_free(_port(container)) else free_port()
    pins = Path(ensure_bpffs()) / f"{BPFFS_TEST_PREFIX}{secrets.token_hex(4)}"
    config_dir = tmp_path_factory.mktemp("config")
    name = _container_name("agent")
    pair = VethPair()
    prometheus = None
    try:
        pins.mkdir()
        config = {"listen": f"127.0.0.1:{port}", "pin_dir": str(pins / "agent"),
                  "tools": {"packets": {"interfaces": [pair.host]}, "flows": {"interfaces": [pair.host]},
                            "opens": {}, "execs": {}}}
        (config_dir / "agent.yaml").write_text(yaml.safe_dump(config))
        podman("run", "--detach", "--name", name, *run_options(pod, container, config_dir=config_dir), image,
               *container["args"])
        _wait(lambda: _serves(port), "the agent serving /metrics", alive=lambda: podman.running(name))
        prometheus = Prometheus([f"127.0.0.1:{port}"])
        yield Agent(name, podman.pid(name), port, pair, prometheus)
    finally:
        if prometheus is not None:
            prometheus.stop()
        podman.remove_containers(name)
        pair.close()
        shutil.rmtree(pins, ignore_errors=True)


def test_the_agent_has_exactly_what_the_daemonset_grants(podman: Podman, agent: Agent, pod: dict[str, Any],
                                                         container: dict[str, Any]) -> None:
    # A process started in the container now has what the container was given.
    started = podman("exec", agent.name, "grep", "^Cap", "/proc/self/status").stdout
    given = {key: int(value, 16) for key, value in (line.split(":\t") for line in started.splitlines())}
    granted = _capability_bits(container["securityContext"]["capabilities"]["add"])
    # Of those, what this machine has to give (its bounding set lacks CAP_SYS_RESOURCE).
    assert given["CapBnd"] == given["CapEff"] == granted & int(_status(os.getpid())["CapBnd"], 16)
    # The agent, once attached, has nothing in effect and only what a reload needs (bpfscope.agent.caps).
    status = _status(agent.pid)
    reload = sum(1 << c for c in caps.RELOAD_CAPS)
    assert int(status["CapEff"], 16) == 0
    assert int(status["CapPrm"], 16) == int(status["CapBnd"], 16) == reload
    with open(f"/proc/{agent.pid}/mountinfo") as f:
        (root,) = [line.split() for line in f if line.split()[4] == "/"]
    assert "ro" in root[5].split(","), root  # readOnlyRootFilesystem
    same_pids = os.readlink(f"/proc/{agent.pid}/ns/pid") == os.readlink("/proc/self/ns/pid")
    assert same_pids == pod.get("hostPID", False)
    if not same_pids:
        assert status["NSpid"].split()[-1] == "1"  # the agent is its namespace's init
    assert (os.readlink(f"/proc/{agent.pid}/ns/net") == os.readlink("/proc/self/ns/net")) == pod["hostNetwork"]


def test_prometheus_scrapes_exact_counts_from_the_container(agent: Agent, tmp_path: Path) -> None:
    iface, sent = agent.pair.host, 300
    send_to_host(agent.pair, sent)
    # A comm no other process on the machine has: execs are counted machine-wide.
    comm = f"bpfs{secrets.token_hex(5)}"
    program = tmp_path / comm
    shutil.copy2("/bin/true", program)
    runs = 7
    for _ in range(runs):
        subprocess.run([str(program)], check=True, timeout=30)
    queries = {
        f'bpfscope_packets_total{{interface="{iface}",protocol="ipv4"}}': sent,
        f'bpfscope_ip_packets_total{{interface="{iface}",protocol="udp"}}': sent,
        f'sum(bpfscope_flow_packets_total{{interface="{iface}",direction="in"}})': sent,
        f'sum(bpfscope_execs_total{{comm="{comm}"}})': runs,
        "sum(bpfscope_agent_info)": 1,
    }
    for promql, expected in queries.items():
        assert agent.prometheus.wait_for(promql, expected) == expected, promql


def test_the_images_healthcheck_passes(podman: Podman, agent: Agent, container: dict[str, Any]) -> None:
    if agent.port != _port(container):
        pytest.skip(f"port {_port(container)} is taken on this machine, and the image's HEALTHCHECK probes it")
    result = podman("healthcheck", "run", agent.name, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def _per_cpu_map_bytes(pid: int) -> int:
    """What the agent's maps take for each CPU: max_entries × value size (rounded to 8) of per-CPU maps."""
    total = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:bpf-map":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
        except FileNotFoundError:
            continue
        if int(info["map_type"]) in _PER_CPU_MAPS:
            total += int(info["max_entries"]) * (-(-int(info["value_size"]) // 8) * 8)
    return total


def _possible_cpus() -> int:
    """CPUs the kernel sizes per-CPU maps for: /sys/devices/system/cpu/possible, as "0-63" or "0,2-5"."""
    with open("/sys/devices/system/cpu/possible") as f:
        ranges = f.read().strip().split(",")
    count = 0
    for cpus in ranges:
        first, _, last = cpus.partition("-")
        count += int(last or first) - int(first) + 1
    return count


def _memory_peak(pid: int) -> int:
    """The highest memory use of a process's cgroup (BPF maps included from Linux 5.11), v1 or v2."""
    with open(f"/proc/{pid}/cgroup") as f:
        lines = [line.rstrip("\n").split(":", 2) for line in f]
    for _, controllers, path in lines:
        if "memory" in controllers.split(","):
            return int(Path(f"/sys/fs/cgroup/memory{path}/memory.max_usage_in_bytes").read_text())
    (path,) = [path for hierarchy, _, path in lines if hierarchy == "0"]
    return int(Path(f"/sys/fs/cgroup{path}/memory.peak").read_text())


def test_the_memory_limit_holds_the_maps_of_a_large_node(agent: Agent, container: dict[str, Any]) -> None:
    limit = quantity(container["resources"]["limits"]["memory"])
    peak = _memory_peak(agent.pid)
    assert peak < limit
    cpus = _possible_cpus()
    per_cpu = _per_cpu_map_bytes(agent.pid)
    assert per_cpu > 0
    largest = cpus + (limit - peak) / per_cpu
    print(f"memory: peak {peak / 2**20:.1f} MiB on {cpus} CPUs, maps {per_cpu / 2**20:.2f} MiB per CPU; "
          f"the limit of {limit / 2**20:.0f} MiB serves nodes of up to {largest:.0f} CPUs")
    assert largest >= NODE_CPUS


def test_sighup_to_pid_1_reloads_without_losing_counts(podman: Podman, agent: Agent, pod: dict[str, Any]) -> None:
    """deploy/README.md: with a PID namespace of its own, `kill -HUP 1` in the pod reloads the agent."""
    if pod.get("hostPID"):
        pytest.skip("with hostPID, PID 1 in the pod is the node's init")
    iface = agent.pair.host
    promql = f'bpfscope_packets_total{{interface="{iface}",protocol="ipv4"}}'
    (sample,) = agent.prometheus.query(promql)
    before = float(sample["value"][1])
    podman("exec", agent.name, "sh", "-c", "kill -HUP 1")
    # Packets sent while the reload attaches anew would be counted or not, as it happens: wait for its end.
    _wait(lambda: "reloaded" in podman("logs", agent.name).stderr, "the agent saying it reloaded",
          alive=lambda: podman.running(agent.name))
    send_to_host(agent.pair, 10)
    assert agent.prometheus.wait_for(promql, before + 10) == before + 10
    assert podman.running(agent.name)
    assert podman.pid(agent.name) == agent.pid


# --- flows on clsact -------------------------------------------------------------------------------------


def _last_record(podman: Podman, name: str) -> dict[str, Any]:
    """The last JSON record `bpfscope flows --json` wrote in a container ({} before the first)."""
    stdout = podman("logs", name, check=False).stdout
    records = [line for line in stdout.splitlines() if line.startswith("{")]
    return json.loads(records[-1]) if records else {}  # type: ignore[no-any-return]


def _packets_in(record: dict[str, Any]) -> int:
    return sum(flow["in"]["packets"] for flow in record.get("top", []))


def _leases(leases: Path, iface: str) -> list[str]:
    index = str(ifindex(iface))
    return [path.name for path in leases.glob("*") if path.name.split("-")[0] == index]


def test_flows_on_clsact_and_a_killed_containers_filters_are_removed_at_the_next_start(
        podman: Podman, image: str, pod: dict[str, Any], container: dict[str, Any], veth_pair: VethPair,
        tmp_path: Path) -> None:
    iface = veth_pair.host
    # The leases go to a directory of the test's own on the node's lease mount ($BPFSCOPE_TC_LEASES): any
    # bpfscope that attaches with clsact on this machine sweeps the leases it finds abandoned in its directory,
    # and one of another test run would take the killed container's filters before the next container could.
    volumes = {v["name"]: v for v in pod["volumes"]}
    ((mount, node_dir),) = [(m["mountPath"], volumes[m["name"]]["hostPath"]["path"]) for m in container["volumeMounts"]
                            if PurePath(DEFAULT_TC_LEASES).is_relative_to(m["mountPath"])]
    own = f"tc-test-{secrets.token_hex(4)}"
    leases = Path(node_dir) / own
    flows = ["--no-healthcheck", *run_options(pod, container, config_dir=tmp_path),
             f"--env={TC_LEASES_ENV}={PurePath(mount) / own}", "--entrypoint", "bpfscope", image,
             "flows", "--mode", "clsact", "--iface", iface, "--json", "--interval", "0.5"]
    killed, next_one = _container_name("flows-killed"), _container_name("flows-next")
    try:
        podman("run", "--detach", "--name", killed, *flows)
        filters = _wait(lambda: len(tc_filters(iface)) == 2 and tc_filters(iface), "flows attaching with clsact",
                        alive=lambda: podman.running(killed))
        sent = 40
        send_to_host(veth_pair, sent)

        def counted() -> dict[str, Any]:
            record = _last_record(podman, killed)
            return record if _packets_in(record) == sent else {}

        record = _wait(counted, f"flows counting the {sent} packets sent", alive=lambda: podman.running(killed))
        assert record["mode"] == "clsact"

        podman("kill", "--signal", "KILL", killed)
        _wait(lambda: not podman.running(killed), "the killed container stopping")
        assert tc_filters(iface) == filters  # a cls_bpf filter outlives its process
        assert len(_leases(leases, iface)) == 2  # and its lease, on the node, with nobody holding it

        podman("run", "--detach", "--name", next_one, *flows)
        now = _wait(lambda: len(tc_filters(iface)) == 2 and not tc_filters(iface) & filters and tc_filters(iface),
                    "the next container replacing the killed one's filters", alive=lambda: podman.running(next_one))
        stderr = podman("logs", next_one).stderr
        for _, program in filters:
            assert f"program {program} on {iface}" in stderr, stderr
        podman("stop", "--time", "10", next_one)
        assert tc_filters(iface) == set(), now
        assert _leases(leases, iface) == []
    finally:
        podman.remove_containers(killed, next_one)
        shutil.rmtree(leases, ignore_errors=True)
