"""`bpfscope biolatency`'s view: for each disk and operation, log2 histograms of device time and queue
time as BCC's biolatency prints them, at the end (Ctrl-C, SIGTERM or --duration) and, with --interval,
for every interval. On a terminal, a live table of each interval's requests."""

from __future__ import annotations

import argparse
from typing import Any

from ..output.histogram import Durations
from ..output.units import count_of
from ..tools.biolatency import BlockLatency, IoSnapshot, IoTimes
from ._histograms import HistogramView
from .options import unseen


class BiolatencyView(HistogramView[BlockLatency]):
    columns = ("disk", "op", "requests", "per s", "device avg", "device p99", "queued", "queue avg")

    def tracing(self) -> str:
        where = f" on {self.tool.disk.name}" if self.tool.disk is not None else ""
        return f"Tracing block device I/O{where} ({self.tool.form})... Hit Ctrl-C to end."

    def title(self) -> str:
        return f"bpfscope biolatency ({self.tool.form}, {self.tool.unit.label}) — Ctrl-C to stop"

    def as_dict(self, snapshot: Any) -> dict[str, Any]:
        return self.tool.as_dict(snapshot)

    def rows(self) -> list[list[Any]]:
        delta = self.now - self.previous
        return [[disk, op, *_cells(times, delta.time)] for disk, op, times in self._parts(delta)]

    def summary(self, final: dict[str, Any]) -> str:
        disks = {row["disk"] for row in final["disks"]}
        return (f"biolatency ({final['form']}): {count_of(final['requests'], 'request')} completed on "
                f"{count_of(len(disks), 'disk')}, {unseen(final)} in {final['seconds']:.1f} s")

    def _parts(self, snap: IoSnapshot) -> list[tuple[str, str, IoTimes]]:
        """(disk, operation, times) of each disk and operation that completed requests, by name."""
        shown = sorted((key for key, times in snap.times.items() if times.device.count or times.queue.count),
                       key=lambda key: self.tool.order(*key))
        return [(self.tool.disk_of(dev).name, op, snap.times[(dev, op)]) for dev, op in shown]

    def text(self, snap: IoSnapshot) -> str:
        lines: list[str] = []
        for disk, op, times in self._parts(snap):
            lines.append(f"\ndisk = {disk}, op = {op}: {count_of(times.device.count, 'request')}, "
                         f"{times.queue.count:,} queued")
            for name, durations in (("device time", times.device), ("queue time", times.queue)):
                if durations.count:
                    hist = durations.histogram
                    lines += [f"  {name}:", *hist.lines(), hist.summary()]
        if snap.lost:
            lines.append(f"not timed: {count_of(snap.lost, 'request')} lost to a full map")
        return "\n".join(lines) if lines else "no requests completed"


def _cells(times: IoTimes, seconds: float) -> list[str]:
    unit = times.device.unit.label
    return [f"{times.device.count:,}", f"{times.device.count / (seconds or 1.0):,.0f}",
            _average(times.device, unit), _p99(times.device), f"{times.queue.count:,}", _average(times.queue, unit)]


def _average(durations: Durations, unit: str) -> str:
    average = durations.histogram.average
    return "-" if average is None else f"{average:,.1f} {unit}"


def _p99(durations: Durations) -> str:
    p99 = durations.histogram.percentile(99)
    return "-" if p99 is None else f"{p99.value:,.0f}"


def view(bio: BlockLatency, args: argparse.Namespace) -> BiolatencyView:
    return BiolatencyView(bio, args)
