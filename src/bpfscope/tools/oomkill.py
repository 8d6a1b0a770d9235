"""The OOM kill tracer: loads oomkill.bpf.o with its filters frozen in .rodata, attaches it to the
oom:mark_victim tracepoint and reads one record per kill from its ring buffer: the victim (process,
comm, uid, oom_score_adj, memory), its cgroups, the memory cgroup that hit its limit (or none: the
system's memory ran out) with that limit, and the task whose allocation triggered the kill.

Kills are rare, so each record becomes an object here; cgroup ids become paths by a walk of the
memory controller's hierarchy (cgroup v1's on a hybrid machine) at most once a second."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional

import numpy as np

from ..features import Feature, require
from ..mounts import CGROUP, cgroup2_path, ensure_tracefs
from ..object import ObjectSpec, tool_object
from ._base import CGROUP as CGROUP_OPTION
from ._base import COMM, COMM_BYTES, DURATION, INTERVAL, JSON, PID, TRACE, Kind, Tool, check_pid

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from ..agent.containers import ContainerResolver
    from ..ringbuf import RingBuffer

__all__ = ["OomKill", "OomKillTracer", "TOOL", "memory_hierarchy", "oom_kills"]

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
_COUNTERS = {1: "memory", 2: "memory+swap"}  # enum oom_counter; 0: no cgroup was full


def oom_kills() -> int:
    """The kernel's count of OOM kills since boot (/proc/vmstat oom_kill)."""
    with open("/proc/vmstat") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("oom_kill "))


def memory_hierarchy() -> tuple[Optional[str], bool]:
    """Where the memory controller's hierarchy is mounted, and whether it is cgroup v1's (which counts
    memory + swap as well): cgroup v2's where its root lists `memory`, else a v1 mount of it."""
    v2 = cgroup2_path()
    if v2 is not None:
        try:
            with open(os.path.join(v2, "cgroup.controllers")) as f:
                if "memory" in f.read().split():
                    return v2, False
        except OSError:
            pass
    with open("/proc/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 4 and fields[2] == "cgroup" and "memory" in fields[3].split(","):
                return fields[1], True
    return None, False


def _system_pages() -> int:
    """The memory an OOM kill of the whole system weighs against (oom_control.totalpages): RAM and swap."""
    with open("/proc/meminfo") as f:
        kb = {line.split(":")[0]: int(line.split()[1]) for line in f if line.startswith(("MemTotal:", "SwapTotal:"))}
    return (kb["MemTotal"] + kb.get("SwapTotal", 0)) // PAGE_KB


@dataclass(frozen=True)
class OomKill:
    time: float  # seconds since the epoch
    pid: int  # the victim's process
    tid: int  # the task the kernel marked
    comm: str
    uid: int
    oom_score_adj: int
    total_vm_kb: int
    anon_rss_kb: int
    file_rss_kb: int
    shmem_rss_kb: int
    pgtables_kb: int
    cgroup: str  # the victim's memory cgroup
    cgroup_v2: str  # the victim's cgroup v2 (where it differs, on a hybrid machine)
    cgroup_id: int  # the victim's cgroup v2 id (the agent's container labels)
    oom_cgroup: Optional[str]  # the memory cgroup that hit its limit; None: the system's memory ran out
    oom_counter: Optional[str]  # "memory", or "memory+swap" (cgroup v1)
    usage_pages: Optional[int]  # that counter's usage and limit when the victim was marked
    totalpages: int  # what the victim was weighed against: the cgroup's limit, or RAM and swap
    trigger_pid: int
    trigger_tid: int
    trigger_comm: str

    @property
    def constraint(self) -> str:
        return "system" if self.oom_cgroup is None else "memcg"

    @property
    def rss_pages(self) -> int:
        return (self.anon_rss_kb + self.file_rss_kb + self.shmem_rss_kb) // PAGE_KB

    def as_dict(self) -> dict[str, Any]:
        return {"time": round(self.time, 6), "pid": self.pid, "tid": self.tid, "comm": self.comm, "uid": self.uid,
                "oom_score_adj": self.oom_score_adj, "rss_pages": self.rss_pages, "totalpages": self.totalpages,
                "total_vm_kb": self.total_vm_kb, "anon_rss_kb": self.anon_rss_kb, "file_rss_kb": self.file_rss_kb,
                "shmem_rss_kb": self.shmem_rss_kb, "pgtables_kb": self.pgtables_kb, "cgroup": self.cgroup,
                "cgroup_v2": self.cgroup_v2, "constraint": self.constraint, "oom_cgroup": self.oom_cgroup,
                "oom_counter": self.oom_counter, "usage_pages": self.usage_pages,
                "trigger": {"pid": self.trigger_pid, "tid": self.trigger_tid, "comm": self.trigger_comm}}

    def __str__(self) -> str:
        where = f"{self.oom_cgroup} full ({self.oom_counter})" if self.oom_cgroup is not None else "system"
        stamp = time.strftime("%H:%M:%S", time.localtime(self.time)) + f".{int(self.time * 1e6) % 1_000_000:06d}"
        return (f"{stamp:<15} {self.pid:>7} {self.comm:<16} {self.rss_pages * PAGE_KB / 1024:>9.1f} "
                f"{self.totalpages * PAGE_KB / 1024:>9.1f} {where:<32} {self.cgroup:<24} "
                f"{self.trigger_pid} {self.trigger_comm}")


def _text(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("utf-8", "backslashreplace")


class OomKillTracer(Tool):
    """`with OomKillTracer() as tracer: tracer.poll()` gives the kills since the last poll, as OomKills."""

    NAME = "oomkill"
    HELP = "trace OOM kills: the victim, its memory, the cgroup that hit its limit and the trigger (oom tracepoint)"
    NEEDS = (("tracepoints",), ("tracefs",), ("ringbuf",), ("task_from_pid",))
    CAPABILITIES = TRACE
    KIND = Kind.STREAMING
    OPTIONS = (
        PID.but(help="only kills of this process"),
        COMM.but(help=f"only kills of tasks whose comm is exactly NAME (at most {COMM_BYTES - 1} bytes)"),
        CGROUP_OPTION.but(help="only kills of tasks in the cgroup v2 at PATH (under its mount, or as "
                          "/proc/PID/cgroup shows it)"),
        INTERVAL.but(default=0.5, help="seconds between refreshes of the live view (default: 0.5)"),
        DURATION,
        JSON.but(help="one JSON object per kill, and a final one"),
    )
    AGENT_KEY = "oom_kills"
    HEADER = (f"{'TIME':<15} {'PID':>7} {'COMM':<16} {'RSS MiB':>9} {'OF MiB':>9} {'LIMIT HIT':<32} "
              f"{'CGROUP':<24} TRIGGER")

    def __init__(self, *, pid: Optional[int] = None, comm: Optional[str] = None, cgroup_id: Optional[int] = None,
                 pin_dir: Optional[str] = None) -> None:
        super().__init__(pin_dir=pin_dir)
        self.pid = pid
        self.comm = comm
        self.cgroup_id = cgroup_id
        self.kernel_kills_at_open = 0  # /proc/vmstat oom_kill when the program was attached
        self._events: Optional[RingBuffer] = None
        self._memcgs: Optional[ContainerResolver] = None  # memory cgroup ids → paths
        self._cgroups: Optional[ContainerResolver] = None  # cgroup v2 ids → paths, where it differs
        self._clock_offset_ns = 0
        self._kills: dict[tuple[str, str, str], int] = {}  # the agent's: (constraint, container, pod) → kills

    @classmethod
    def _from_options(cls, values: Mapping[str, Any], pin_dir: Optional[str]) -> OomKillTracer:
        return cls(pid=values["pid"], comm=values["comm"], cgroup_id=values["cgroup"], pin_dir=pin_dir)

    def _open(self) -> None:
        from ..agent.containers import ContainerResolver

        if self.pid is not None:
            check_pid(self.pid)  # an unknown pid stops here, before anything is loaded
        require(Feature.TASK_FROM_PID)  # one line on a kernel without it (before 6.2)
        ensure_tracefs()  # where libbpf finds the tracepoint's id
        memory_root, v1 = memory_hierarchy()
        v2_root = cgroup2_path() or CGROUP
        self._memcgs = ContainerResolver(max_containers=0, cgroup_root=memory_root) if memory_root else None
        self._cgroups = (ContainerResolver(max_containers=0, cgroup_root=v2_root)
                         if os.path.isdir(v2_root) and v2_root != memory_root else self._memcgs)
        spec = ObjectSpec.open(tool_object("oomkill"))
        rodata = spec.rodata
        if self.pid is not None:
            rodata["cfg_tgid"] = self.pid
        if self.cgroup_id is not None:
            rodata["cfg_cgroup_id"] = self.cgroup_id
        if self.comm is not None:
            words = np.frombuffer(self.comm.encode().ljust(COMM_BYTES, b"\0"), dtype=np.uint64)
            rodata["cfg_comm"] = tuple(int(w) for w in words)
            rodata["cfg_filter_comm"] = True
        rodata["cfg_memsw"] = v1
        spec.pin_maps(self.pin_dir, ["events_lost"])  # the agent's lost count carries on across its restarts
        self._obj = obj = spec.load()
        self.kernel_kills_at_open = oom_kills()
        self.attach(obj.programs["record_kill"].attach())
        self._events = self.ring(obj.ring_buffer("events"))
        self._clock_offset_ns = time.time_ns() - time.clock_gettime_ns(time.CLOCK_MONOTONIC)

    def poll(self, timeout_ms: int = 100) -> list[OomKill]:
        assert self._events is not None, "open() first"
        return [self._kill(row) for row in self._events.poll(timeout_ms)]

    def _kill(self, r: Any) -> OomKill:
        counter = int(r["counter"])
        return OomKill(
            time=(int(r["time_ns"]) + self._clock_offset_ns) / 1e9, pid=int(r["pid"]), tid=int(r["tid"]),
            comm=_text(bytes(r["comm"])), uid=int(r["uid"]), oom_score_adj=int(r["oom_score_adj"]),
            total_vm_kb=int(r["total_vm_kb"]), anon_rss_kb=int(r["anon_rss_kb"]), file_rss_kb=int(r["file_rss_kb"]),
            shmem_rss_kb=int(r["shmem_rss_kb"]), pgtables_kb=int(r["pgtables_kb"]),
            cgroup=self._path(self._memcgs, int(r["memcg_id"]), bytes(r["memcg_name"])),
            cgroup_v2=self._path(self._cgroups, int(r["cgroup_id"]), b""), cgroup_id=int(r["cgroup_id"]),
            oom_cgroup=(self._path(self._memcgs, int(r["oom_memcg_id"]), bytes(r["oom_memcg_name"]))
                        if counter else None),
            oom_counter=_COUNTERS.get(counter), usage_pages=int(r["oom_usage_pages"]) if counter else None,
            totalpages=int(r["oom_limit_pages"]) if counter else _system_pages(),
            trigger_pid=int(r["trigger_pid"]), trigger_tid=int(r["trigger_tid"]),
            trigger_comm=_text(bytes(r["trigger_comm"])),
        )

    @staticmethod
    def _path(paths: Optional[ContainerResolver], cgroup_id: int, name: bytes) -> str:
        """The cgroup's path under its hierarchy's mount; ".../NAME" for one removed before it was read."""
        found = paths.path(cgroup_id) if paths is not None and cgroup_id else ""
        return found or (f".../{_text(name)}" if _text(name) else "")

    def tally(self, batch: list[OomKill]) -> None:
        for kill in batch:
            labels = self.containers.labels(kill.cgroup_id) if self.containers is not None else ("", "")
            key = (kill.constraint, *labels)
            self._kills[key] = self._kills.get(key, 0) + 1

    def metrics(self) -> Iterator[Metric]:
        """OOM kills by constraint (memcg: a cgroup's limit; system) and the victim's container."""
        from prometheus_client.core import CounterMetricFamily

        kills = CounterMetricFamily("bpfscope_oom_kills", "Processes the OOM killer killed, by what ran out "
                                    "(a memory cgroup's limit or the system's memory) and the victim's container",
                                    labels=["constraint", "container", "pod"])
        for labels, count in sorted(self._kills.items()):
            kills.add_metric(list(labels), count)
        yield kills


TOOL = OomKillTracer
