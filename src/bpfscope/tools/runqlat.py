"""Run queue latency: how long runnable tasks wait for a CPU. Loads runqlat.bpf.o, attaches it to
sched_wakeup, sched_wakeup_new and sched_switch (their tp_btf forms where the kernel takes them, else
the tracepoints) and reads its log2 histograms, kept in the kernel per CPU and, on request, per cgroup,
in one batch per map.

Every filter (process, comm, cgroup) runs in the kernel before a wait is timed. What the kernel's
scheduler counts as `run_delay` (/proc/PID/schedstat) is what this counts as a wait: from a wakeup, or
from being switched out while runnable, to the next switch-in. A wait is counted when it ends, on the CPU
it ends on.

In the agent the histograms are Prometheus histograms in seconds: per CPU always, and per cgroup (the
20 cgroups that waited most, the rest as "other") where the section asks for per_cgroup."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional

import numpy as np

from ..features import Feature
from ..object import ObjectSpec, tool_object
from ..output.histogram import Durations, Unit
from ..variants import Variant, choose
from ._base import (
    CGROUP,
    COMM,
    COMM_BYTES,
    DURATION,
    INTERVAL,
    JSON,
    PID,
    TRACE,
    Kind,
    Option,
    Tool,
    check_pid,
)

if TYPE_CHECKING:
    from prometheus_client.core import Metric

__all__ = ["OTHER", "RunqueueLatency", "TOOL", "WaitSnapshot"]

TOP_CGROUPS = 20  # cgroups the agent labels by path, first come; the rest are "other"
OTHER = "other"
# The agent's histograms are in ns: slot i is [2^i, 2^(i+1)) ns. It exports 1 µs to about 69 s.
_EXPORTED_SLOTS = range(9, 36)


@dataclass(frozen=True)
class WaitSnapshot:
    """The histograms since attach: per CPU (the waits that ended on it), per cgroup (with per_cgroup),
    and the waits lost to a full map."""

    time: float
    unit: Unit
    by_cpu: dict[int, Durations] = field(default_factory=dict)
    by_cgroup: dict[int, Durations] = field(default_factory=dict)
    lost: int = 0

    @property
    def total(self) -> Durations:
        whole = Durations(self.unit)
        for waits in self.by_cpu.values():
            whole += waits
        return whole

    def __sub__(self, earlier: WaitSnapshot) -> WaitSnapshot:
        empty = Durations(self.unit)
        return WaitSnapshot(
            self.time - earlier.time, self.unit,
            {cpu: waits - earlier.by_cpu.get(cpu, empty) for cpu, waits in self.by_cpu.items()},
            {cgroup: waits - earlier.by_cgroup.get(cgroup, empty) for cgroup, waits in self.by_cgroup.items()},
            self.lost - earlier.lost,
        )


class RunqueueLatency(Tool):
    """`with RunqueueLatency() as runq: runq.snapshot().total.histogram`; detaches on exit."""

    NAME = "runqlat"
    HELP = "time runnable tasks wait for a CPU, as log2 histograms per CPU or per cgroup (sched tracepoints)"
    NEEDS = (("tp_btf", "tracepoints"),)
    CAPABILITIES = TRACE
    KIND = Kind.POLLING
    OPTIONS = (
        PID.but(help="only the threads of this process"),
        COMM,
        CGROUP.but(help="only tasks in the cgroup v2 at PATH (under its mount, or as /proc/PID/cgroup shows it)"),
        Option("per_cpu", "a histogram per CPU (the CPU the wait ended on)", agent=False),
        Option("per_cgroup", "a histogram per cgroup, kept in the kernel"),
        Option("unit", "histogram unit (default: us)", str, default=Unit.USECS.value,
               choices=tuple(u.value for u in Unit), agent=False),
        INTERVAL.but(default=None, help="also print each interval's histograms, every S seconds"),
        DURATION,
        JSON.but(help="one JSON object per interval, and a final one"),
    )
    AGENT_KEY = "runqlat"
    AGENT_VALUES = {"unit": Unit.NSECS.value}  # the finest unit: the exported buckets are in seconds
    # The task_structs themselves at each tracepoint (Linux 5.5+), or the tracepoints' records, which
    # carry pids and comms only (a filter, or per_cgroup, then counts a wait at the CPU's next switch).
    VARIANT = Variant(Feature.TP_BTF, ("wakeup_btf", "wakeup_new_btf", "switch_btf"),
                      ("wakeup_tp", "wakeup_new_tp", "switch_tp"))

    def __init__(self, *, pid: Optional[int] = None, comm: Optional[str] = None, cgroup_id: Optional[int] = None,
                 per_cpu: bool = False, per_cgroup: bool = False, unit: Unit = Unit.USECS,
                 pin_dir: Optional[str] = None) -> None:
        super().__init__(pin_dir=pin_dir)  # histograms pinned there carry on from an earlier run
        self.pid = pid
        self.comm = comm
        self.cgroup_id = cgroup_id
        self.per_cpu = per_cpu
        self.per_cgroup = per_cgroup
        self.unit = unit
        self.form = ""  # "tp_btf" or "tracepoint": the programs this kernel took
        self._paths: dict[int, str] = {}  # cgroup id -> path, once found
        self._labelled: dict[int, str] = {}  # the agent's: cgroups exported by path (at most TOP_CGROUPS)
        self._retired = Durations(unit)  # the agent's: waits of unlabelled cgroups deleted from the map

    @classmethod
    def _from_options(cls, values: Mapping[str, Any], pin_dir: Optional[str]) -> RunqueueLatency:
        return cls(pid=values["pid"], comm=values["comm"], cgroup_id=values["cgroup"], per_cpu=values["per_cpu"],
                   per_cgroup=values["per_cgroup"], unit=Unit(values["unit"]), pin_dir=pin_dir)

    def _open(self) -> None:
        if self.pid is not None:
            check_pid(self.pid)  # an unknown pid stops here, before anything is loaded
        spec = ObjectSpec.open(tool_object("runqlat"))
        self.form = "tracepoint" if choose(spec, self.VARIANT) is not None else "tp_btf"
        rodata = spec.rodata
        rodata["cfg_tgid"] = self.pid or 0
        if self.comm is not None:
            words = np.frombuffer(self.comm.encode().ljust(COMM_BYTES, b"\0"), dtype=np.uint64)
            rodata["cfg_comm"] = tuple(int(w) for w in words)
            rodata["cfg_filter_comm"] = True
        rodata["cfg_cgroup_id"] = self.cgroup_id or 0
        rodata["cfg_per_cgroup"] = self.per_cgroup
        rodata["cfg_unit_ns"] = self.unit.ns
        filtered = self.pid is not None or self.comm is not None or self.cgroup_id is not None
        rodata["cfg_defer"] = self.form == "tracepoint" and (filtered or self.per_cgroup)
        spec.pin_maps(self.pin_dir, ["by_cpu", "by_cgroup", "lost"])
        self._obj = obj = spec.load()
        for program in obj.programs.values():
            self.attach(program.attach())

    # --- reading ---

    def snapshot(self) -> WaitSnapshot:
        now = time.monotonic()
        maps = self.obj.maps
        _, cpus = maps["by_cpu"].lookup_batch()  # one row, a value per CPU: each CPU's own histogram
        by_cpu = {cpu: Durations.from_row(self.unit, row) for cpu, row in enumerate(cpus[0])}
        by_cgroup: dict[int, Durations] = {}
        if self.per_cgroup:
            keys, values = maps["by_cgroup"].lookup_batch_sum()  # type: ignore[attr-defined]
            by_cgroup = {int(key): Durations.from_row(self.unit, row) for key, row in zip(keys.tolist(), values)}
        return WaitSnapshot(now, self.unit, by_cpu, by_cgroup, self.lost)

    @property
    def lost(self) -> int:
        """Waits not timed because a map was full (tasks waiting at once, or cgroups)."""
        _, values = self.obj.maps["lost"].lookup_batch_sum()  # type: ignore[attr-defined]
        return int(values[0])

    def cgroup_path(self, cgroup_id: int) -> str:
        """The cgroup v2 path of `cgroup_id` ("/system.slice/cron.service"), or its id while unknown (gone)."""
        path = self._paths.get(cgroup_id)
        if path is None:
            if self.containers is None:
                from ..agent.containers import ContainerResolver

                self.containers = ContainerResolver()
            path = self.containers.path(cgroup_id)
            if not path:
                return str(cgroup_id)
            self._paths[cgroup_id] = path
        return path

    def as_dict(self, snap: WaitSnapshot) -> dict[str, Any]:
        """A JSON-ready view of a snapshot (or of an interval's delta): the whole histogram, and per CPU
        or per cgroup as asked; each with its buckets, count, average, percentiles and exact total."""
        view: dict[str, Any] = {"form": self.form, **snap.total.as_dict()}
        if self.per_cpu:
            view["cpus"] = [{"cpu": cpu, **waits.as_dict()} for cpu, waits in sorted(snap.by_cpu.items())]
        if self.per_cgroup:
            ranked = sorted(snap.by_cgroup.items(), key=lambda item: -item[1].count)
            view["cgroups"] = [{"cgroup": self.cgroup_path(cgroup), "cgroup_id": cgroup, **waits.as_dict()}
                               for cgroup, waits in ranked if waits.count]
        view["lost_waits"] = snap.lost
        return view

    def metrics(self) -> Iterator[Metric]:
        """bpfscope_runqueue_latency_seconds per CPU and, with per_cgroup,
        bpfscope_runqueue_latency_by_cgroup_seconds per cgroup: the first 20 cgroups that waited by
        their path, for as long as they exist, and the rest together as "other"."""
        from prometheus_client.core import HistogramMetricFamily

        snap = self.snapshot()
        by_cpu = HistogramMetricFamily("bpfscope_runqueue_latency_seconds", "Time runnable tasks waited for a "
                                       "CPU, by the CPU the wait ended on (sched tracepoints)", labels=["cpu"])
        for cpu, waits in sorted(snap.by_cpu.items()):
            by_cpu.add_metric([str(cpu)], waits.prometheus_buckets(_EXPORTED_SLOTS), waits.sum_ns / 1e9)
        yield by_cpu
        if not self.per_cgroup:
            return
        by_cgroup = HistogramMetricFamily("bpfscope_runqueue_latency_by_cgroup_seconds", "Time runnable tasks "
                                          "waited for a CPU, by their cgroup v2 (20 by path, then other)",
                                          labels=["cgroup"])
        waited = self._forget_gone(snap.by_cgroup)
        for cgroup, _ in sorted(waited.items(), key=lambda item: (-item[1].count, item[0])):
            if len(self._labelled) >= TOP_CGROUPS:
                break
            self._labelled.setdefault(cgroup, self.cgroup_path(cgroup))
        other = self._retired
        for cgroup, waits in sorted(waited.items()):
            if cgroup in self._labelled:
                by_cgroup.add_metric([self._labelled[cgroup]], waits.prometheus_buckets(_EXPORTED_SLOTS),
                                     waits.sum_ns / 1e9)
            else:
                other += waits
        by_cgroup.add_metric([OTHER], other.prometheus_buckets(_EXPORTED_SLOTS), other.sum_ns / 1e9)
        yield by_cgroup

    def _forget_gone(self, by_cgroup: dict[int, Durations]) -> dict[int, Durations]:
        """With the map nine tenths full, the histograms of cgroups that no longer exist are deleted from
        it, so that new ones are counted: a labelled cgroup's series ends, and the rest stay in "other"."""
        if len(by_cgroup) < self.obj.maps["by_cgroup"].max_entries * 9 // 10 or self.containers is None:
            return by_cgroup
        alive = self.containers.exists(by_cgroup)
        kept = {}
        for cgroup, waits in by_cgroup.items():
            if alive[cgroup]:
                kept[cgroup] = waits
                continue
            self.obj.maps["by_cgroup"].delete(cgroup)
            if self._labelled.pop(cgroup, None) is None:
                self._retired += waits
        return kept


TOOL = RunqueueLatency
