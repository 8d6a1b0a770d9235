"""Container and pod labels for a cgroup id. BPF programs see only `bpf_get_current_cgroup_id()`, the inode
number of the task's cgroup v2 directory; the agent turns it into the cgroup's path and parses the
container runtime's naming out of it, so that no runtime socket or Kubernetes API is needed."""

from __future__ import annotations

import errno
import math
import os
import re
import threading
import time
from collections.abc import Iterable

from ..errors import BpfscopeError
from ..mounts import CGROUP, cgroup2_path

__all__ = ["OTHER", "ContainerResolver", "parse_cgroup_path"]

#: the container (and pod) label of containers past the `max_containers` bound
OTHER = "other"

# How runtimes name a container's cgroup, as cAdvisor's container factories match them
# (container/{docker,containerd,crio}/factory.go): a full 64-hex id, either as a systemd scope
# "<runtime>-<id>.scope" (docker-, cri-containerd-, crio-, libpod-; the cgroupfs drivers of CRI-O and
# podman drop ".scope") or as a bare directory (/docker/<id>, /kubepods/<qos>/pod<uid>/<id>).
# "crio-conmon-<id>" and "libpod-conmon-<id>" hold the runtime's monitor, not the container: no match.
_CONTAINER = re.compile(r"(?:(?:docker|cri-containerd|crio|libpod)-)?([0-9a-f]{64})(?:\.scope)?")
# The kubelet's pod cgroup (pkg/kubelet/cm/cgroup_manager_linux.go): "pod<uid>" under the cgroupfs
# driver, "kubepods[-<qos>]-pod<uid>.slice" under systemd's, which escapes the uid's "-" as "_". A uid is
# a UUID, or 32 hex digits (the hash a static pod's uid is).
_POD = re.compile(
    r"(?:kubepods(?:-besteffort|-burstable)?-)?pod([0-9a-f]{8}(?:[-_][0-9a-f]{4}){3}[-_][0-9a-f]{12}|[0-9a-f]{32})"
    r"(?:\.slice)?"
)


def parse_cgroup_path(path: str) -> tuple[str, str]:
    """(container id, pod uid) of a cgroup v2 path; "" for each that the path does not name.

    The container is the deepest component that names one (a runtime's sub-cgroups such as podman's
    "libpod-<id>.scope/container" stay with it; in nested containers the innermost wins). A pod counts
    only in the kubelet's "kubepods" hierarchy, and its uid is given back with dashes as the API server spells it."""
    container = pod = ""
    in_kubepods = False
    for component in path.split("/"):
        in_kubepods = in_kubepods or component.startswith("kubepods")
        match = _CONTAINER.fullmatch(component)
        if match:
            container = match.group(1)
            continue
        match = _POD.fullmatch(component) if in_kubepods else None
        if match:
            pod = match.group(1).replace("_", "-")
    return container, pod


def _walk(root: str) -> dict[int, str]:
    """inode -> path (relative to `root`, "/" for root) of every cgroup under `root`."""
    index = {os.stat(root).st_ino: "/"}
    stack = [(root, "")]
    while stack:
        directory, relative = stack.pop()
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        # readdir's d_ino: kernfs reports the same id there as stat() does, without a syscall
                        index[entry.inode()] = path = f"{relative}/{entry.name}"
                        stack.append((entry.path, path))
        except OSError:  # removed while we walked
            continue
    return index


class ContainerResolver:
    """Labels events by container: `path()` and `labels()` of a cgroup id. Safe to call from several threads.

    The inode -> path index is built by walking the cgroup2 tree, and walked again only when an id is
    missing from it, at most once per `rewalk_interval` seconds: an id that stays unknown (a cgroup gone
    before its event was read) costs a dict lookup, not a walk per event. An id met within that interval
    of a walk resolves to "" until the next one, so a new container's first events may count as the host's.

    Cardinality is bounded: at most `max_containers` container ids are labelled at once. A container seen
    past that is labelled ("other", pod uid) if its pod already has a labelled container, ("other", "") if
    it has no pod, and ("other", "other") otherwise, so a flood of short-lived containers cannot grow
    the series without bound. A container keeps the label it got first while it lives; its place is
    freed when a walk finds its cgroups gone."""

    def __init__(self, max_containers: int = 500, cgroup_root: str | None = None,
                 rewalk_interval: float = 1.0) -> None:
        if max_containers < 0:
            raise ValueError(f"max_containers must be >= 0, not {max_containers}")
        self.max_containers = max_containers
        #: the cgroup2 mount; by default found in /proc/mounts (/sys/fs/cgroup/unified on hybrid systems)
        self.cgroup_root = cgroup_root if cgroup_root is not None else cgroup2_path() or CGROUP
        if not os.path.isdir(self.cgroup_root):
            raise BpfscopeError(errno.ENOENT, f"no cgroup2 hierarchy at {self.cgroup_root}")
        self.rewalk_interval = rewalk_interval
        self._lock = threading.Lock()
        self._index: dict[int, str] = {}
        self._last_walk = -math.inf
        self._labels: dict[int, tuple[str, str]] = {}
        self._slots: dict[str, str] = {}  # labelled container id -> its pod uid

    def path(self, cgroup_id: int) -> str:
        """The cgroup v2 path of `cgroup_id` ("/system.slice/docker-<id>.scope"), "" if unknown."""
        with self._lock:
            return self._path(cgroup_id)

    def labels(self, cgroup_id: int) -> tuple[str, str]:
        """(container id, pod uid) of `cgroup_id`, ids in full; ("", "") for a host process or an unknown id."""
        with self._lock:
            cached = self._labels.get(cgroup_id)
            if cached is not None:
                return cached
            path = self._path(cgroup_id)
            if not path:
                return "", ""
            container, pod = parse_cgroup_path(path)
            if container and container not in self._slots:
                if len(self._slots) < self.max_containers:
                    self._slots[container] = pod
                else:
                    container, pod = OTHER, pod if not pod or pod in self._slots.values() else OTHER
            self._labels[cgroup_id] = container, pod
            return container, pod

    def exists(self, cgroup_ids: Iterable[int]) -> dict[int, bool]:
        """Whether each cgroup exists now, from a walk of the tree made for this question (a cgroup
        made since the last walk is not taken for gone)."""
        with self._lock:
            self._rewalk()
            return {cgroup_id: cgroup_id in self._index for cgroup_id in cgroup_ids}

    def _path(self, cgroup_id: int) -> str:
        path = self._index.get(cgroup_id)
        if path is None and time.monotonic() - self._last_walk >= self.rewalk_interval:
            self._rewalk()
            path = self._index.get(cgroup_id)
        return path or ""

    def _rewalk(self) -> None:
        self._index = _walk(self.cgroup_root)
        self._last_walk = time.monotonic()
        # cgroup ids are never reused: forget the removed ones, and free their containers' places
        self._labels = {cid: labels for cid, labels in self._labels.items() if cid in self._index}
        live = {container for container, _ in self._labels.values()}
        self._slots = {container: pod for container, pod in self._slots.items() if container in live}
