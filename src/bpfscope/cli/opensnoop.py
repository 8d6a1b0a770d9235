"""`bpfscope opensnoop`'s views: every open, openat and openat2 as it returns (pid, tid, comm, fd or
error, flags, path), formatted a batch at a time by the tool; or with --count, opens per comm counted
in the kernel and printed at each --interval and at the end."""

from __future__ import annotations

import argparse
from typing import Any, Union

import numpy as np

from ..output.units import count_of
from ..tools.opensnoop import CommCount, Snoop
from ._runner import PollingView, StreamingView
from .options import unseen

TOP_COMMS = 20  # rows of the count table


def _banner(snoop: Snoop) -> str:
    f = snoop.filters
    parts = [f"pid {f.pid}" if f.pid is not None else "", f"comm {f.comm!r}" if f.comm is not None else "",
             "failed only" if f.failed else "", f"paths under {f.path_prefix!r}" if f.path_prefix is not None else ""]
    shown = [p for p in parts if p]
    described = f" ({', '.join(shown)})" if shown else ""
    return (f"bpfscope opensnoop: {'counting' if snoop.count else 'tracing'} {', '.join(snoop.calls)}{described} "
            "— Ctrl-C to stop")


class OpensView(StreamingView[Snoop]):
    def __init__(self, snoop: Snoop, args: argparse.Namespace) -> None:
        super().__init__(snoop, args)
        self.failed = 0

    def banner(self) -> str:
        return _banner(self.tool)

    def header(self) -> str:
        return self.tool.HEADER

    def take(self, batch: np.ndarray[Any, Any]) -> None:
        self.events += len(batch)
        self.failed += int((batch["ret"] < 0).sum())

    def json_lines(self, batch: np.ndarray[Any, Any]) -> bytes:
        return self.tool.json_lines(batch)

    def text_lines(self, batch: np.ndarray[Any, Any]) -> bytes:
        return self.tool.text_lines(batch)

    def final(self) -> dict[str, Any]:
        return {"calls": list(self.tool.calls), "events": self.events, "failed": self.failed}

    def summary(self, final: dict[str, Any]) -> str:
        return (f"opensnoop ({', '.join(final['calls'])}): {count_of(final['events'], 'open')} "
                f"({final['failed']:,} failed), {unseen(final)} in {final['seconds']:.1f} s")


class CountView(PollingView[Snoop]):
    def banner(self) -> str:
        return _banner(self.tool)

    def update(self) -> None:
        self.counts = self.tool.counts()

    def record(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 3), "opens": sum(c.opens for c in self.counts),
                "failed": sum(c.failed for c in self.counts), "lost": self.tool.lost,
                "counts": [vars(c) for c in self.counts]}

    def line(self) -> str:
        return _table("after", self.seconds, self.counts)

    def final(self) -> dict[str, Any]:
        self.update()
        self.final_seconds = self.seconds
        return {"calls": list(self.tool.calls), "opens": sum(c.opens for c in self.counts),
                "failed": sum(c.failed for c in self.counts), "counts": [vars(c) for c in self.counts]}

    def summary(self, final: dict[str, Any]) -> str:
        return (f"opensnoop --count ({', '.join(final['calls'])}): {count_of(final['opens'], 'open')} "
                f"({final['failed']:,} failed) by {count_of(len(final['counts']), 'comm')}, {unseen(final)} "
                f"in {final['seconds']:.1f} s")

    def text_summary(self, final: dict[str, Any]) -> str:
        return f"{_table('in', self.final_seconds, self.counts)}\n{self.summary(final)}"


def _table(when: str, seconds: float, counts: list[CommCount]) -> str:
    lines = [f"{when} {seconds:.1f} s:", f"  {'COMM':<16} {'OPENS':>12} {'FAILED':>12}"]
    lines += [f"  {c.comm:<16} {c.opens:>12,} {c.failed:>12,}" for c in counts[:TOP_COMMS]]
    if len(counts) > TOP_COMMS:
        lines.append(f"  … and {count_of(len(counts) - TOP_COMMS, 'more comm')}")
    return "\n".join(lines)


def view(snoop: Snoop, args: argparse.Namespace) -> Union[OpensView, CountView]:
    return CountView(snoop, args) if snoop.count else OpensView(snoop, args)

