"""`bpfscope funclatency TARGET:SYMBOL`'s view: a log2 histogram of how long a function takes, printed
at the end (Ctrl-C, SIGTERM, --duration, or the traced process's exit) and, with --interval, for
every interval."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any, Optional

from ..output.units import count_of
from ..tools.funclatency import FunctionLatency, LatencySnapshot
from ._runner import PollingView
from .options import unseen


class LatencyView(PollingView[FunctionLatency]):
    def tracing(self) -> str:
        where = f"{self.tool.path}:{self.tool.symbol}" + (f" in pid {self.tool.pid}" if self.tool.pid else "")
        return f"Tracing {where} (uprobe + uretprobe)... Hit Ctrl-C to end."

    def banner(self) -> Optional[str]:
        return self.tracing() if self.args.json else None  # in text, the output's first line (as BCC's)

    def header(self) -> str:
        return self.tracing()

    def ended(self) -> Optional[str]:
        if self.tool.pid and not os.path.exists(f"/proc/{self.tool.pid}"):
            return f"process {self.tool.pid} exited"
        return None

    def begin(self) -> None:
        self.first = self.previous = self.now = self.tool.snapshot()

    def update(self) -> None:
        self.previous, self.now = self.now, self.tool.snapshot()

    def record(self) -> dict[str, Any]:
        delta = self.now - self.previous
        return {"seconds": round(delta.time, 3), **self.tool.as_dict(delta)}

    def line(self) -> str:
        return f"\n{time.strftime('%H:%M:%S')}\n{_text(self.now - self.previous)}"

    def final(self) -> dict[str, Any]:
        self.update()
        self.whole = self.now - self.first
        return self.tool.as_dict(self.whole)

    def summary(self, final: dict[str, Any]) -> str:
        return (f"funclatency {self.tool.path}:{self.tool.symbol}: {count_of(final['count'], 'call')} timed, "
                f"{unseen(final)} in {final['seconds']:.1f} s")

    def text_summary(self, final: dict[str, Any]) -> str:
        whole = f"\nwhole run ({self.whole.time:.1f} s):\n" if self.args.interval else ""
        return whole + _text(self.whole)


def _text(snap: LatencySnapshot) -> str:
    hist = snap.histogram
    lines = [*hist.lines(), hist.summary()]
    notes = [f"{n:,} {what}" for n, what in ((snap.too_deep, "calls nested too deep to time"),
                                              (snap.unmatched, "returns of calls entered before attach"),
                                              (snap.untracked, "calls lost to a full thread table"),
                                              (snap.missed, "probe runs the kernel skipped")) if n]
    if notes:
        lines.append("not timed: " + ", ".join(notes))
    return "\n".join(lines)


def view(tracer: FunctionLatency, args: argparse.Namespace) -> LatencyView:
    return LatencyView(tracer, args)
