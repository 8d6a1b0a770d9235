"""deploy/: the image, compose file, DaemonSet, PodMonitor and dashboard checked without a cluster or a container
engine. The manifests must grant the agent exactly what it needs, mount what it reads, agree on one port, and
ship a config our own parser accepts; the dashboard may only query metrics the agent exports. tests/image/
builds the image and runs it as the DaemonSet says (`make test-image`)."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from bpfscope.__about__ import __version__
from bpfscope.agent import caps
from bpfscope.agent.config import DEFAULT_LISTEN, AgentConfig, parse_config
from bpfscope.agent.server import HEALTH_PATH
from bpfscope.link import DEFAULT_TC_LEASES

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
AGENT_YAML = DEPLOY / "agent.yaml"
CONFIG_PATH = "/etc/bpfscope/agent.yaml"
IMAGE = f"bpfscope-agent:{__version__}"

# What the agent needs (deploy/README.md says why).
CAPABILITIES = {"BPF", "PERFMON", "NET_ADMIN", "SYS_ADMIN", "SYS_RESOURCE"}
# Host paths the container sees at the same place; True where it must not be able to write.
MOUNTS = {
    "/sys/fs/bpf": False,  # pins
    "/sys/kernel/btf": True,
    "/sys/kernel/tracing": False,
    "/sys/kernel/debug": False,
    "/sys/fs/cgroup": True,
    "/run/bpfscope": False,  # clsact filter leases (DEFAULT_TC_LEASES), the node's so that they outlive the container
}
# hostPath types other than Directory: the lease directory is made on a node that has none yet.
HOST_PATH_TYPES = {"/run/bpfscope": "DirectoryOrCreate"}
# The DaemonSet's memory limit, which must hold the agent and its BPF maps (tests/image measures both).
MEMORY_LIMIT = 384 * 2**20

# The agent's metrics and their labels (before Prometheus adds instance and job).
HISTOGRAMS = {"bpfscope_function_latency_seconds", "bpfscope_http_request_duration_seconds"}
_L3 = {"interface", "protocol"}
_FLOW = {"interface", "protocol", "local", "local_port", "remote", "remote_port", "direction"}
_EXEC = {"comm", "container", "pod"}
METRICS: dict[str, set[str]] = {
    "bpfscope_packets_total": _L3,
    "bpfscope_packet_bytes_total": _L3,
    "bpfscope_ip_packets_total": _L3,
    "bpfscope_ip_packet_bytes_total": _L3,
    "bpfscope_flow_bytes_total": _FLOW,
    "bpfscope_flow_packets_total": _FLOW,
    "bpfscope_flows": {"interface"},
    "bpfscope_guard_packets_total": {"interface", "verdict"},
    "bpfscope_file_opens_total": {"comm"},
    "bpfscope_file_open_errors_total": {"comm"},
    "bpfscope_execs_total": _EXEC,
    "bpfscope_exec_failures_total": _EXEC,
    "bpfscope_function_latency_seconds": {"target", "symbol"},
    "bpfscope_http_requests_total": {"method", "status_class", "route", "side"},
    "bpfscope_http_request_errors_total": {"method", "route", "side"},
    "bpfscope_http_request_duration_seconds": {"method", "status_class", "route", "side"},
    "bpfscope_ringbuf_lost_events_total": {"tool", "ring", "source"},
    "bpfscope_agent_info": {"version"},
}
TARGET_LABELS = {"instance", "job"}


# --- loading ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return document["services"]["agent"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, Any]]:
    """The documents of daemonset.yaml by kind (each kind once)."""
    documents = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "daemonset.yaml").read_text()) if d]
    by_kind = {d["kind"]: d for d in documents}
    assert len(by_kind) == len(documents), [d["kind"] for d in documents]
    assert set(by_kind) == {"Namespace", "ServiceAccount", "ConfigMap", "PriorityClass", "DaemonSet"}
    return by_kind


@pytest.fixture(scope="module")
def podmonitor() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "kubernetes" / "podmonitor.yaml").read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def pod(k8s: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return k8s["DaemonSet"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod["containers"]
    return only  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def configmap_text(k8s: dict[str, dict[str, Any]]) -> str:
    return k8s["ConfigMap"]["data"]["agent.yaml"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads((DEPLOY / "grafana" / "bpfscope-dashboard.json").read_text())  # type: ignore[no-any-return]


class Dockerfile:
    """Instructions per stage, continuation lines joined and comments dropped."""

    def __init__(self, text: str) -> None:
        self.args: dict[str, str] = {}
        self.stages: list[list[tuple[str, str]]] = []
        for line in re.sub(r"\\\n", " ", text).splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            keyword, _, rest = line.partition(" ")
            keyword, rest = keyword.upper(), " ".join(rest.split())
            if keyword == "FROM":
                self.stages.append([])
            if not self.stages:
                name, _, default = rest.partition("=")
                self.args[name] = default  # ARG before the first FROM
            else:
                self.stages[-1].append((keyword, rest))

    def all(self, stage: int, keyword: str) -> list[str]:
        return [rest for kw, rest in self.stages[stage] if kw == keyword]

    def one(self, stage: int, keyword: str) -> str:
        (only,) = self.all(stage, keyword)
        return only

    def base(self, stage: int) -> str:
        image = self.one(stage, "FROM").split()[0]
        return re.sub(r"\$\{(\w+)\}", lambda m: self.args[m.group(1)], image)


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return Dockerfile((DEPLOY / "Dockerfile").read_text())


def _cap_names(names: list[str]) -> set[str]:
    return {name.upper().removeprefix("CAP_") for name in names}


def _port(listen: str) -> int:
    return int(listen.rpartition(":")[2])


# --- capabilities and host access ------------------------------------------------------------------------


def test_compose_grants_exactly_the_agents_capabilities_and_nothing_privileged(compose: dict[str, Any]) -> None:
    assert compose.get("privileged", False) is False
    assert _cap_names(compose["cap_drop"]) == {"ALL"}
    assert _cap_names(compose["cap_add"]) == CAPABILITIES
    assert len(compose["cap_add"]) == len(CAPABILITIES)
    # Docker's AppArmor profile forbids mount and writes under /sys; unconfining it is not `privileged`.
    assert "apparmor=unconfined" in compose["security_opt"]
    # SELinux's container_t may not call bpf(); spc_t may.
    assert "label=type:spc_t" in compose["security_opt"]


def test_daemonset_grants_exactly_the_agents_capabilities_and_nothing_privileged(
    pod: dict[str, Any], container: dict[str, Any]
) -> None:
    context = container["securityContext"]
    assert context.get("privileged", False) is False
    assert _cap_names(context["capabilities"]["drop"]) == {"ALL"}
    assert _cap_names(context["capabilities"]["add"]) == CAPABILITIES
    assert len(context["capabilities"]["add"]) == len(CAPABILITIES)
    # The API refuses allowPrivilegeEscalation: false beside SYS_ADMIN.
    assert context.get("allowPrivilegeEscalation") is not False
    assert context["appArmorProfile"] == {"type": "Unconfined"}
    assert context["seLinuxOptions"] == {"type": "spc_t"}  # container_t may not call bpf(); spc_t may
    assert not pod.get("initContainers")  # no other container with rights of its own


def test_granted_capabilities_cover_what_a_reload_needs() -> None:
    granted = {caps.CAPABILITIES[f"CAP_{name}"] for name in CAPABILITIES}
    assert caps.RELOAD_CAPS <= granted


def test_the_agents_capability_drop_succeeds_with_only_the_granted_set() -> None:
    """As a container starts it: root whose bounding set is the granted capabilities (those this machine has)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    with open("/proc/self/status") as f:
        bounding = int(next(line for line in f if line.startswith("CapBnd:")).split()[1], 16)
    here = sorted(name for name in CAPABILITIES if bounding >> caps.CAPABILITIES[f"CAP_{name}"] & 1)
    script = (
        "from bpfscope.agent import caps\n"
        "caps.drop_capabilities(keep_effective=frozenset(), keep_permitted=caps.RELOAD_CAPS)\n"
        "status = caps.current()\n"
        "assert status['CapEff'] == 0, status\n"
        "assert status['CapPrm'] == status['CapBnd'] == sum(1 << c for c in caps.RELOAD_CAPS), status\n"
    )
    bounding_set = "-all," + ",".join(f"+{name.lower()}" for name in here)
    result = subprocess.run([setpriv, "--bounding-set", bounding_set, "--", sys.executable, "-c", script],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def test_readmes_docker_run_grants_what_compose_does(compose: dict[str, Any]) -> None:
    readme = (DEPLOY / "README.md").read_text()
    (command,) = re.findall(r"^docker run .*$", readme.replace("\\\n", " "), re.M)
    assert _cap_names(re.findall(r"--cap-add (\S+)", command)) == CAPABILITIES
    assert "--cap-drop ALL" in command and "--network host" in command
    assert ("--pid host" in command) == ("pid" in compose)
    for option in compose["security_opt"]:
        assert f"--security-opt {option} " in command, option
    assert f"--memory {compose['mem_limit']} " in command
    for volume in compose["volumes"]:
        if not volume.startswith("./"):  # the image has the config
            assert f"-v {volume} " in command, volume


def _needs_host_pids(config: AgentConfig) -> bool:
    """Whether the config names processes by node PID: a `pid:`, or a target reached through /proc/<pid>/root."""
    named = [i.values for t in config.tools for i in t.instances]
    return (any(v.get("pid") is not None or str(v.get("function", "")).startswith("/proc/") for v in named)
            or ((http := config.tool("httptrace")) is not None and http.values["pid"] is not None))


def test_compose_uses_the_hosts_network_and_its_pids_only_if_the_config_needs_them(
        compose: dict[str, Any], config: AgentConfig) -> None:
    assert compose["network_mode"] == "host"
    assert (compose.get("pid") == "host") == _needs_host_pids(config)


def test_daemonset_uses_the_hosts_network_and_its_pids_only_if_the_config_needs_them(
        pod: dict[str, Any], config: AgentConfig) -> None:
    assert pod["hostNetwork"] is True
    assert pod.get("hostPID", False) is _needs_host_pids(config)
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"  # an OTLP collector's Service name still resolves


def test_compose_mounts_what_the_agent_reads(compose: dict[str, Any]) -> None:
    volumes: dict[str, tuple[str, set[str]]] = {}
    for volume in compose["volumes"]:
        source, target, *options = volume.split(":")
        volumes[target] = (source, set(",".join(options).split(",")) - {""})
    for path, read_only in MOUNTS.items():
        source, options = volumes[path]
        assert source == path
        assert ("ro" in options) == read_only, path
    source, options = volumes[CONFIG_PATH]
    assert (DEPLOY / source).resolve() == AGENT_YAML and "ro" in options


def test_daemonset_mounts_what_the_agent_reads(pod: dict[str, Any], container: dict[str, Any]) -> None:
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for path, read_only in MOUNTS.items():
        mount = mounts[path]
        assert volumes[mount["name"]]["hostPath"] == {"path": path, "type": HOST_PATH_TYPES.get(path, "Directory")}
        assert mount.get("readOnly", False) == read_only, path
        # Bidirectional needs a privileged container; the node's mounts show through either way.
        assert mount.get("mountPropagation", "None") in ("None", "HostToContainer")
    assert {m["name"] for m in container["volumeMounts"]} <= set(volumes)


def test_clsact_leases_live_on_the_node() -> None:
    """A killed agent's clsact filters are found by its lease (bpfscope.link), which must outlive the container."""
    assert any(Path(DEFAULT_TC_LEASES).is_relative_to(path) and not read_only for path, read_only in MOUNTS.items())


def test_counters_outlive_restarts(compose: dict[str, Any], container: dict[str, Any],
                                   dockerfile: Dockerfile) -> None:
    arguments = ["--config", CONFIG_PATH, "--keep-pins"]
    assert compose["command"] == arguments
    assert container["args"] == arguments
    assert json.loads(dockerfile.one(1, "CMD")) == arguments
    assert compose["restart"] in ("unless-stopped", "always")


# --- one config, one port --------------------------------------------------------------------------------


def test_configmap_ships_deploy_agent_yaml(configmap_text: str) -> None:
    assert configmap_text == AGENT_YAML.read_text()


def test_shipped_config_passes_our_parser(configmap_text: str) -> None:
    config = parse_config(yaml.safe_load(configmap_text))
    assert config.listen == "0.0.0.0:24435"  # reachable by Prometheus; 127.0.0.1 is the bare-host default
    assert config.pin_dir.startswith("/sys/fs/bpf/")
    assert config.tool("packets") is not None and config.tool("flows") is not None
    assert config.tool("opensnoop") is not None and config.tool("execsnoop") is not None
    assert config.tool("guard") is None  # it drops packets: nobody gets that from a default
    assert config.tool("funclatency") is None and config.tool("httptrace") is None and config.custom == ()


def test_shipped_config_passes_the_agents_check() -> None:
    result = subprocess.run([sys.executable, "-m", "bpfscope.cli.main", "agent", "--check", "--config",
                             str(AGENT_YAML)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


@pytest.fixture(scope="module")
def config(configmap_text: str) -> AgentConfig:
    return parse_config(yaml.safe_load(configmap_text))


def test_one_port_everywhere(config: AgentConfig, k8s: dict[str, dict[str, Any]], container: dict[str, Any],
                             dockerfile: Dockerfile) -> None:
    port = _port(config.listen)
    assert port == _port(DEFAULT_LISTEN)
    # Outside the exporters' range of Prometheus' port allocations (full; 9435 there is ebpf_exporter's), the
    # NodePort range and the ephemeral ports (deploy/README.md says why).
    assert not 9100 <= port <= 9999 and port < 30000
    annotations = k8s["DaemonSet"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"
    (metrics,) = container["ports"]
    assert metrics["containerPort"] == metrics["hostPort"] == port  # host networking: the two must agree
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == HEALTH_PATH  # not /metrics, which reads every map
        assert get["port"] in (port, metrics["name"])
    assert dockerfile.all(1, "EXPOSE") == [str(port)]
    assert f"127.0.0.1:{port}{HEALTH_PATH}" in dockerfile.one(1, "HEALTHCHECK")


def test_images_are_this_version(compose: dict[str, Any], container: dict[str, Any]) -> None:
    assert compose["image"] == container["image"] == IMAGE


# --- Kubernetes, as far as it can be checked without a cluster --------------------------------------------


def _quantity(text: str | int) -> float:
    units = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    number, unit = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(text)).groups()  # type: ignore[union-attr]
    return float(number) * units[unit]


def test_daemonset_resources_are_bounded(container: dict[str, Any]) -> None:
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    assert _quantity(limits["memory"]) <= MEMORY_LIMIT
    assert 80 * 2**20 < _quantity(limits["memory"])  # the agent's RSS target, plus room
    assert _quantity(limits["cpu"]) <= 1
    for resource in ("cpu", "memory"):
        assert 0 < _quantity(requests[resource]) <= _quantity(limits[resource])


def _docker_bytes(text: str) -> int:
    """Docker's memory sizes, whose units are binary: 384m is 384 MiB."""
    number, unit = re.fullmatch(r"([0-9]+)([bkmg]?)", text).groups()  # type: ignore[union-attr]
    return int(number) * 1024 ** "bkmg".index(unit or "b")


def test_compose_has_the_daemonsets_memory_limit(compose: dict[str, Any], container: dict[str, Any]) -> None:
    assert _docker_bytes(compose["mem_limit"]) == _quantity(container["resources"]["limits"]["memory"])


def test_daemonset_has_a_priority_class_of_its_own(k8s: dict[str, dict[str, Any]], pod: dict[str, Any]) -> None:
    priority = k8s["PriorityClass"]
    assert priority["apiVersion"] == "scheduling.k8s.io/v1"
    assert "namespace" not in priority["metadata"]  # cluster-scoped
    assert pod["priorityClassName"] == priority["metadata"]["name"]
    # Above ordinary pods (0), below the system classes (2,000,000,000 and up), never everyone's default.
    assert 0 < priority["value"] <= 1_000_000_000 and priority["globalDefault"] is False


def test_podmonitor_scrapes_the_daemonsets_pods(podmonitor: dict[str, Any], k8s: dict[str, dict[str, Any]],
                                               container: dict[str, Any]) -> None:
    assert podmonitor["apiVersion"] == "monitoring.coreos.com/v1" and podmonitor["kind"] == "PodMonitor"
    assert podmonitor["metadata"]["namespace"] == k8s["Namespace"]["metadata"]["name"]
    template = k8s["DaemonSet"]["spec"]["template"]["metadata"]
    assert podmonitor["spec"]["selector"]["matchLabels"].items() <= template["labels"].items()
    (endpoint,) = podmonitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in {port["name"] for port in container["ports"]}
    assert endpoint["path"] == template["annotations"]["prometheus.io/path"]


def test_daemonset_is_well_formed(k8s: dict[str, dict[str, Any]], pod: dict[str, Any],
                                  container: dict[str, Any]) -> None:
    daemonset = k8s["DaemonSet"]
    assert daemonset["apiVersion"] == "apps/v1"
    assert all(k8s[kind]["apiVersion"] == "v1" for kind in ("Namespace", "ServiceAccount", "ConfigMap"))
    namespace = k8s["Namespace"]["metadata"]["name"]
    assert k8s["Namespace"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    for kind in ("ServiceAccount", "ConfigMap", "DaemonSet"):
        assert k8s[kind]["metadata"]["namespace"] == namespace
    selector = daemonset["spec"]["selector"]["matchLabels"]
    labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert selector and selector.items() <= labels.items()
    assert pod["serviceAccountName"] == k8s["ServiceAccount"]["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is False  # the agent never calls the API server
    (config_volume,) = [v for v in pod["volumes"] if "configMap" in v]
    assert config_volume["configMap"]["name"] == k8s["ConfigMap"]["metadata"]["name"]
    (config_mount,) = [m for m in container["volumeMounts"] if m["name"] == config_volume["name"]]
    # A whole-directory mount (no subPath), so an edited ConfigMap reaches the pod.
    assert config_mount["mountPath"] == str(Path(CONFIG_PATH).parent) and "subPath" not in config_mount
    assert len({v["name"] for v in pod["volumes"]}) == len(pod["volumes"])
    for port in container["ports"]:
        assert isinstance(port["containerPort"], int) and 0 < port["containerPort"] < 65536
        assert port.get("protocol", "TCP") == "TCP" and re.fullmatch(r"[a-z0-9-]{1,15}", port["name"])
    assert {"operator": "Exists"} in pod["tolerations"]  # every node, tainted or not
    assert 1 <= pod["terminationGracePeriodSeconds"] <= 30
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])


# --- dashboard -------------------------------------------------------------------------------------------


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in _panels(dashboard) for t in p.get("targets", [])]


def _metric(name: str) -> str:
    """A histogram's series name → its metric name."""
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in HISTOGRAMS:
            return name[: -len(suffix)]
    return name


def test_dashboard_is_a_grafana_dashboard(dashboard: dict[str, Any]) -> None:
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert variables["instance"]["type"] == "query"
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in _panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${DS_PROMETHEUS}"


def test_dashboard_queries_only_the_agents_metrics(dashboard: dict[str, Any]) -> None:
    used = set()
    queries = _exprs(dashboard) + [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    for expr in queries:
        names = {_metric(name) for name in re.findall(r"bpfscope_[a-z_]+", expr)}
        assert names and names <= set(METRICS), expr
        used |= names
    assert used == set(METRICS)  # a panel for everything the agent exports


def test_dashboard_groups_by_labels_its_metrics_have(dashboard: dict[str, Any]) -> None:
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            expr = target["expr"]
            series = re.findall(r"bpfscope_[a-z_]+", expr)
            known = set(TARGET_LABELS).union(*(METRICS[_metric(s)] for s in series))
            if any(s.endswith("_bucket") for s in series):
                known.add("le")
            grouped = {label.strip() for group in re.findall(r"\bby \(([^)]*)\)", expr) for label in group.split(",")}
            matched = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"", expr))
            legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            assert grouped | matched | legend <= known, (panel["title"], expr)
            assert 'instance=~"$instance"' in expr, expr  # the agent variable narrows every query
            assert "[$__rate_interval]" in expr or "rate(" not in expr, expr


def test_dashboard_promql_parses(dashboard: dict[str, Any], tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    rules = [{"record": f"bpfscope:dashboard:{i}", "expr": expr.replace("$__rate_interval", "5m").replace(
        "$instance", ".+")} for i, expr in enumerate(_exprs(dashboard))]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# --- image -----------------------------------------------------------------------------------------------


def test_dockerfile_builds_in_one_stage_and_runs_in_another(dockerfile: Dockerfile) -> None:
    assert len(dockerfile.stages) == 2
    assert dockerfile.base(0) == dockerfile.base(1) == "debian:bookworm-slim"  # one python3 for the venv
    build_from = dockerfile.one(0, "FROM").split()
    assert build_from[1:] == ["AS", "build"]
    build = " ".join(dockerfile.all(0, "RUN"))
    for package in ("clang", "llvm", "libbpf-dev", "make", "python3-venv"):
        assert re.search(rf"install .*\b{package}\b", build), package
    # pip wheel runs hatch_build.py, which compiles every object for the image's architecture (make -C bpf
    # ARCH=...) into the wheel, tagged for that architecture.
    assert "pip wheel" in build and "rm -rf src/bpfscope/_bpf" in build
    assert '"make", "-C"' in (ROOT / "hatch_build.py").read_text()
    runtime = " ".join(dockerfile.all(1, "RUN"))
    assert re.search(r"install .*\blibbpf1\b", runtime) and re.search(r"install .*\bpython3\b", runtime)
    assert not re.search(r"\b(clang|llvm|libbpf-dev|gcc|make)\b", runtime)
    assert "--from=build /opt/bpfscope /opt/bpfscope" in dockerfile.all(1, "COPY")
    assert "deploy/agent.yaml " + CONFIG_PATH in dockerfile.all(1, "COPY")
    assert json.loads(dockerfile.one(1, "ENTRYPOINT")) == ["bpfscope", "agent"]
    for stage in (0, 1):
        assert "DEBIAN_FRONTEND=noninteractive" in dockerfile.all(stage, "ARG")


@pytest.mark.slow
def test_dockerfile_build_context_is_enough_for_the_wheel(dockerfile: Dockerfile, tmp_path: Path) -> None:
    """What the build stage copies, and nothing else, builds a wheel with every object of this machine's
    architecture: the build stage minus the container engine."""
    context = tmp_path / "src"
    for copy in dockerfile.all(0, "COPY"):
        *sources, _ = copy.split()
        for source in sources:
            path = ROOT / source
            if path.is_dir():
                shutil.copytree(path, context / source, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                (context / source).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, context / source)
    shutil.rmtree(context / "src" / "bpfscope" / "_bpf", ignore_errors=True)
    dist = tmp_path / "dist"
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(context)],
                            capture_output=True, text=True, timeout=600, check=False,
                            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = dist.glob("bpfscope-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for source in (ROOT / "src" / "bpfscope").glob("*/*.bpf.c"):
        assert f"bpfscope/_bpf/{platform.machine()}/{source.name[:-2]}.o" in names

