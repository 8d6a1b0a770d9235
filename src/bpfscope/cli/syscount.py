"""`bpfscope syscount`'s view: the busiest syscalls as a live table on a terminal, one line per interval
otherwise (or a JSON object of what the interval counted); at the end the syscalls, the processes (or
cgroups) and the errors by errno, counted since the start."""

from __future__ import annotations

import argparse
from typing import Any

from ..output.units import count_of, si
from ..tools.syscount import Snapshot, SyscallCounter, Totals
from ._runner import PollingView
from .options import unseen


def _duration(ns: Any) -> str:
    if ns is None:
        return "-"
    for unit, size in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= size:
            return f"{ns / size:.1f} {unit}"
    return f"{ns} ns"


class SyscountView(PollingView[SyscallCounter]):
    columns = ("syscall", "calls/s", "calls", "errors", "avg", "max")

    def described(self) -> str:
        """"by process (pid 42, comm 'nginx')": what it counts."""
        t = self.tool
        shown = [f"pid {t.pid}" if t.pid is not None else "", f"comm {t.comm!r}" if t.comm is not None else "",
                 f"cgroup {t.cgroup_id}" if t.cgroup_id is not None else "", "" if t.latency else "no latency"]
        filters = ", ".join(s for s in shown if s)
        return f"by {'cgroup' if t.per_cgroup else 'process'}{f' ({filters})' if filters else ''}"

    def banner(self) -> str:
        return f"bpfscope syscount: counting syscalls {self.described()} — Ctrl-C to stop"

    def begin(self) -> None:
        # From zero, not from a first read: the counters start empty when the programs are attached, and
        # what they counted before this (the banner is out, so a workload may have started) is the run's.
        self.first = self.previous = self.now = Snapshot(self.started, names=self.tool.names)

    def update(self) -> None:
        self.previous, self.now = self.now, self.tool.snapshot()

    def record(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 3), **self.tool.as_dict(self.now - self.previous)}

    def line(self) -> str:
        delta = self.now - self.previous
        total = delta.total
        busiest = ", ".join(f"{name} {t.calls:,}" for name, t in list(delta.by_syscall().items())[:5])
        return (f"{count_of(total.calls, 'call')} ({total.errors:,} failed) in {delta.time:.1f} s"
                f"{f': {busiest}' if busiest else ''}")

    def title(self) -> str:
        calls = (self.now - self.first).total.calls
        return (f"bpfscope syscount {self.described()}: {count_of(calls, 'call')} in {self.seconds:.0f} s "
                "— Ctrl-C to stop")

    def rows(self) -> list[list[Any]]:
        since, delta = self.now - self.first, self.now - self.previous
        seconds = delta.time or 1.0
        recent = delta.by_syscall()
        return [[name, si(recent.get(name, Totals()).calls / seconds, "/s"), f"{t.calls:,}", f"{t.errors:,}",
                 _duration(t.avg_ns), _duration(t.max_ns if t.timed else None)]
                for name, t in list(since.by_syscall().items())[:self.tool.top]]

    def final(self) -> dict[str, Any]:
        self.update()
        self.since_start = self.now - self.first
        return self.tool.as_dict(self.since_start)

    def summary(self, final: dict[str, Any]) -> str:
        owners = final.get("by_process", final.get("by_cgroup", []))
        return (f"syscount: {count_of(final['calls'], 'call')} ({final['errors']:,} failed) by "
                f"{count_of(len(owners), 'cgroup' if self.tool.per_cgroup else 'process', 'processes')}, "
                f"{unseen(final)} in {final['seconds']:.1f} s")

    def text_summary(self, final: dict[str, Any]) -> str:
        return "\n".join([*_tables(self.since_start, self.tool), self.summary(final)])


def _tables(snap: Snapshot, tool: SyscallCounter) -> list[str]:
    top = tool.top
    lines = [f"{'SYSCALL':<24} {'CALLS':>12} {'ERRORS':>10} {'AVG':>12} {'MAX':>12}"]
    for name, t in list(snap.by_syscall().items())[:top]:
        lines.append(f"{name:<24} {t.calls:>12,} {t.errors:>10,} {_duration(t.avg_ns):>12} "
                     f"{_duration(t.max_ns if t.timed else None):>12}")
    owner = "CGROUP" if tool.per_cgroup else "PID"
    lines += ["", f"{owner:>12} {'COMM':<16} {'CALLS':>12} {'ERRORS':>10} {'TIME':>12}"]
    for who, t in list(snap.by_owner().items())[:top]:
        lines.append(f"{who.id:>12} {who.comm:<16} {t.calls:>12,} {t.errors:>10,} {_duration(t.total_ns):>12}")
    errors = [(name, err, n) for name, by_errno in snap.errors().items() for err, n in by_errno.items()]
    if errors:
        lines += ["", f"{'SYSCALL':<24} {'ERRNO':<16} {'CALLS':>12}"]
        lines += [f"{name:<24} {err:<16} {n:>12,}" for name, err, n in sorted(errors, key=lambda e: -e[2])[:top]]
    return lines + [""]


def view(counter: SyscallCounter, args: argparse.Namespace) -> SyscountView:
    return SyscountView(counter, args)
