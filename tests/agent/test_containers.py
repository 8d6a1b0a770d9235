"""Container and pod labels from cgroup ids: the runtimes' path formats, and real cgroups made here."""

from __future__ import annotations

import errno
import os
import secrets
import subprocess
import time
import types
import uuid
from typing import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bpfscope.agent import containers
from bpfscope.agent.containers import OTHER, ContainerResolver, parse_cgroup_path

CID = "9ec39b91f3d70e1beff50a308f77067065ea6be0d91a3378375056cd4422cf3d"
CID2 = "34dc0b5e626f2c5c4c5170e34b10e7654ce36f0fcd532739f4445baabea03376"
UID = "74c13223-5a00-11e9-b385-42010a80018d"
UID_ = UID.replace("-", "_")
STATIC_UID = "d76e26fba3bf2bfd215eb29011d55250"  # a static pod's: the hash of its manifest
CRIO_UID = "068e8fa0-9213-11e7-a01f-507b9d4141fa"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # docker, systemd cgroup driver; and cgroupfs
        (f"/system.slice/docker-{CID}.scope", (CID, "")),
        (f"/docker/{CID}", (CID, "")),
        # Kubernetes with the systemd driver: containerd, CRI-O; the three QoS classes
        (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope",
         (CID, UID)),
        (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{CID}.scope",
         (CID, UID)),
        (f"/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope", (CID, UID)),
        # docker as the Kubernetes runtime (cri-dockerd), systemd driver
        (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/docker-{CID}.scope",
         (CID, UID)),
        # Kubernetes with the cgroupfs driver (cAdvisor's and container-info's test paths)
        (f"/kubepods/besteffort/pod{UID}/{CID2}", (CID2, UID)),
        (f"/kubepods/pod{UID}/{CID2}", (CID2, UID)),
        (f"/kubepods/besteffort/pod{STATIC_UID}/{CID2}", (CID2, STATIC_UID)),
        (f"/kubepods/pod{CRIO_UID}/crio-{CID}.scope", (CID, CRIO_UID)),
        (f"/kubepods/burstable/pod{UID}/crio-{CID}", (CID, UID)),
        # a pod's own slice, and CRI-O's monitor beside its containers: the pod, no container
        (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice", ("", UID)),
        (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-conmon-{CID}.scope",
         ("", UID)),
        (f"/kubepods/pod{UID}/crio-990803c383229c9680ce964738d5e566d97f5bd436ac34808d2ec75", ("", UID)),
        # podman: root, rootless with its "container" sub-cgroup, cgroupfs; conmon is not the container
        (f"/machine.slice/libpod-{CID}.scope", (CID, "")),
        (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope/container", (CID, "")),
        (f"/libpod_parent/libpod-{CID}", (CID, "")),
        (f"/machine.slice/libpod-conmon-{CID}.scope", ("", "")),
        # a container running systemd, and docker in docker: the innermost container
        (f"/system.slice/docker-{CID}.scope/init.scope", (CID, "")),
        (f"/system.slice/docker-{CID}.scope/docker/{CID2}", (CID2, "")),
        # host processes
        ("/", ("", "")),
        ("", ("", "")),
        ("/init.scope", ("", "")),
        ("/system.slice/docker.service", ("", "")),
        ("/system.slice/containerd.service", ("", "")),
        ("/user.slice/user-1000.slice/session-3.scope", ("", "")),
        (f"/system.slice/run-containerd-io.containerd.runtime.v1.linux-k8s.io-{CID}-rootfs.mount", ("", "")),
        (f"/system.slice/var-lib-docker-containers-{CID}-mounts-shm.mount", ("", "")),
        (f"/system.slice/pod{UID}", ("", "")),
    ],
)
def test_parse_cgroup_path(path: str, expected: tuple[str, str]) -> None:
    assert parse_cgroup_path(path) == expected


_IDS = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)


@given(container=_IDS, pod=st.uuids(), qos=st.sampled_from(["", "burstable", "besteffort"]),
       runtime=st.sampled_from(["cri-containerd", "crio", "docker"]))
def test_kubernetes_paths_round_trip(container: str, pod: uuid.UUID, qos: str, runtime: str) -> None:
    slice_ = "kubepods" + (f"-{qos}" if qos else "")
    systemd = ("/kubepods.slice" + (f"/{slice_}.slice" if qos else "")
               + f"/{slice_}-pod{str(pod).replace('-', '_')}.slice/{runtime}-{container}.scope")
    cgroupfs = "/kubepods" + (f"/{qos}" if qos else "") + f"/pod{pod}/{container}"
    assert parse_cgroup_path(systemd) == (container, str(pod))
    assert parse_cgroup_path(cgroupfs) == (container, str(pod))


@given(st.text(alphabet="abcdef0123456789-_./kubepodsliceopr", max_size=200))
def test_any_path_parses_to_an_id_or_nothing(path: str) -> None:
    container, pod = parse_cgroup_path(path)
    assert container == "" or len(container) == 64
    assert "_" not in pod


def _rmdir(path: str) -> None:
    """rmdir a cgroup, waiting while it is still populated (EBUSY) by a process on its way out."""
    deadline = time.monotonic() + 10
    while True:
        try:
            os.rmdir(path)
            return
        except OSError as e:
            if e.errno == errno.ENOENT:  # removed by the test itself
                return
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def cgroups() -> Iterator[Callable[[str], str]]:
    """mkdir -p of a cgroup path under the cgroup2 root; what it made is removed after, deepest first."""
    root: str = ContainerResolver().cgroup_root
    made: list[str] = []

    def make(relative: str) -> str:
        path = root
        for component in relative.strip("/").split("/"):
            path = os.path.join(path, component)
            if not os.path.isdir(path):
                os.mkdir(path)
                made.append(path)
        return path

    try:
        yield make
    finally:
        for path in reversed(made):
            _rmdir(path)


def test_labels_of_a_real_cgroup(cgroups: Callable[[str], str]) -> None:
    pod, container = str(uuid.uuid4()), secrets.token_hex(32)
    pod_slice = f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{pod.replace('-', '_')}.slice"
    scope = f"{pod_slice}/cri-containerd-{container}.scope"
    directory = cgroups(scope)
    resolver = ContainerResolver()
    cgroup_id = os.stat(directory).st_ino

    assert resolver.path(cgroup_id) == scope
    assert resolver.labels(cgroup_id) == (container, pod)
    assert resolver.labels(os.stat(cgroups(pod_slice)).st_ino) == ("", pod)
    assert resolver.path(os.stat(resolver.cgroup_root).st_ino) == "/"
    assert resolver.labels(os.stat(resolver.cgroup_root).st_ino) == ("", "")
    assert resolver.labels(2**63 + 12345) == ("", "")

    sleeper = subprocess.Popen(["sleep", "5"])
    try:
        with open(os.path.join(directory, "cgroup.procs"), "w") as f:
            f.write(str(sleeper.pid))
        with open(f"/proc/{sleeper.pid}/cgroup") as f:
            assert f"0::{scope}" in f.read().splitlines()
        with open(os.path.join(directory, "cgroup.events")) as f:
            assert "populated 1" in f.read().splitlines()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_max_containers(cgroups: Callable[[str], str]) -> None:
    pod_a, pod_b = str(uuid.uuid4()), str(uuid.uuid4())
    ids = [secrets.token_hex(32) for _ in range(5)]

    def container(index: int, pod: str = "") -> int:
        if pod:
            parent = f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod.replace('-', '_')}.slice"
        else:
            parent = f"/bpfscope-test-{ids[0][:8]}.slice"
        return os.stat(cgroups(f"{parent}/cri-containerd-{ids[index]}.scope")).st_ino

    first, in_a, in_b, no_pod = container(0, pod_a), container(1, pod_a), container(2, pod_b), container(3)
    resolver = ContainerResolver(max_containers=1, rewalk_interval=0)
    assert resolver.labels(first) == (ids[0], pod_a)
    assert resolver.labels(in_a) == (OTHER, pod_a)  # the pod is labelled already: kept
    assert resolver.labels(in_b) == (OTHER, OTHER)
    assert resolver.labels(no_pod) == (OTHER, "")
    assert resolver.labels(first) == (ids[0], pod_a)

    # the labelled container goes: its place is taken by the next new one; those seen keep their label
    root = resolver.cgroup_root
    os.rmdir(os.path.join(root, resolver.path(first).lstrip("/")))
    later = container(4, pod_b)
    assert resolver.labels(later) == (ids[4], pod_b)
    assert resolver.labels(in_a) == (OTHER, pod_a)


def test_max_containers_zero_labels_none() -> None:
    resolver = ContainerResolver(max_containers=0)
    with pytest.raises(ValueError):
        ContainerResolver(max_containers=-1)
    assert resolver.labels(os.stat(resolver.cgroup_root).st_ino) == ("", "")


def test_rewalk_is_rate_limited(cgroups: Callable[[str], str], monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(containers, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    resolver = ContainerResolver(rewalk_interval=1.0)
    walks: list[float] = []
    rewalk = resolver._rewalk

    def counted() -> None:
        walks.append(now[0])
        rewalk()

    monkeypatch.setattr(resolver, "_rewalk", counted)

    root_id = os.stat(resolver.cgroup_root).st_ino
    assert resolver.path(root_id) == "/"
    assert walks == [1000.0]

    relative = f"/bpfscope-test-{secrets.token_hex(4)}.slice/docker-{secrets.token_hex(32)}.scope"
    new = os.stat(cgroups(relative)).st_ino
    for _ in range(1000):  # an id per event, unknown until the next walk: no walk each time
        assert resolver.path(new) == ""
        assert resolver.path(2**63 + 1) == ""
    now[0] += 0.99
    assert resolver.path(new) == ""
    assert walks == [1000.0]

    now[0] += 0.02
    assert resolver.path(new) == relative
    assert resolver.path(new) == relative  # known now: no walk
    assert resolver.path(2**63 + 1) == ""  # unknown, but walked just now
    assert walks == [1000.0, 1001.01]
