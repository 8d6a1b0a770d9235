"""`bpfscope runqlat`'s view: log2 histograms of run queue latency as BCC's runqlat prints them, at the
end (Ctrl-C, SIGTERM or --duration) and, with --interval, for every interval; per CPU (`cpu = N`) and
per cgroup (`cgroup = PATH`) where asked. On a terminal, a live table of each interval's waits."""

from __future__ import annotations

import argparse
from typing import Any

from ..output.histogram import Durations
from ..output.units import count_of
from ..tools.runqlat import RunqueueLatency, WaitSnapshot
from ._histograms import HistogramView
from .options import unseen

TOP_CGROUPS = 20  # cgroups shown; the rest are summed up in one line


class RunqlatView(HistogramView[RunqueueLatency]):
    columns = ("waited", "waits/s", "average", "p50", "p99", "max")

    def tracing(self) -> str:
        return f"Tracing run queue latency ({self.tool.form})... Hit Ctrl-C to end."

    def title(self) -> str:
        return f"bpfscope runqlat ({self.tool.form}, {self.tool.unit.label}) — Ctrl-C to stop"

    def as_dict(self, snapshot: Any) -> dict[str, Any]:
        return self.tool.as_dict(snapshot)

    def rows(self) -> list[list[Any]]:
        delta = self.now - self.previous
        return [[name, *_cells(waits, delta.time)] for name, waits in self._parts(delta)]

    def summary(self, final: dict[str, Any]) -> str:
        average = f", average {final['average']:,.1f} {final['unit']}" if final["average"] is not None else ""
        return (f"runqlat ({final['form']}): {count_of(final['count'], 'wait')} timed{average}, "
                f"{unseen(final)} in {final['seconds']:.1f} s")

    def _parts(self, snap: WaitSnapshot) -> list[tuple[str, Durations]]:
        """The histograms to show: per CPU, per cgroup (the TOP_CGROUPS that waited most), or the whole."""
        parts: list[tuple[str, Durations]] = []
        if self.tool.per_cpu:
            parts += [(f"cpu = {cpu}", waits) for cpu, waits in sorted(snap.by_cpu.items())]
        if self.tool.per_cgroup:
            ranked = sorted(snap.by_cgroup.items(), key=lambda item: -item[1].count)
            parts += [(f"cgroup = {self.tool.cgroup_path(c)}", w) for c, w in ranked[:TOP_CGROUPS] if w.count]
            rest = Durations(snap.unit)
            for _, waits in ranked[TOP_CGROUPS:]:
                rest += waits
            if rest.count:
                parts.append((f"cgroup = (the {count_of(len(ranked) - TOP_CGROUPS, 'other')})", rest))
        return parts or [("all", snap.total)]

    def text(self, snap: WaitSnapshot) -> str:
        lines: list[str] = []
        parts = self._parts(snap)
        for name, waits in [part for part in parts if part[1].count] or parts[:1]:
            hist = waits.histogram
            if name != "all":
                lines.append(f"\n{name}")
            lines += [*hist.lines(), hist.summary()]
        if snap.lost:
            lines.append(f"not timed: {count_of(snap.lost, 'wait')} lost to a full map")
        return "\n".join(lines)


def _cells(waits: Durations, seconds: float) -> list[str]:
    """The live table's cells: count, rate, average, p50, p99, and the top of the highest bucket used."""
    hist = waits.histogram
    unit = waits.unit.label
    if not waits.count:
        return ["0", "0", "-", "-", "-", "-"]
    p50, p99 = hist.percentile(50), hist.percentile(99)
    assert p50 is not None and p99 is not None and hist.average is not None
    top = max(i for i, n in enumerate(waits.slots) if n)
    return [f"{waits.count:,}", f"{waits.count / (seconds or 1.0):,.0f}", f"{hist.average:,.1f} {unit}",
            f"{p50.value:,.0f}", f"{p99.value:,.0f}", f"< {1 << (top + 1):,}"]


def view(runq: RunqueueLatency, args: argparse.Namespace) -> RunqlatView:
    return RunqlatView(runq, args)
