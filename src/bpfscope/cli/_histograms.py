"""The view of a tool that keeps log2 histograms in the kernel and reads them each interval (runqlat,
biolatency): BCC's text histograms at the end and, with --interval, for every interval; a live table of
each interval on a terminal. A tool's view says what it traces, its title, its rows and its text."""

from __future__ import annotations

import time
from typing import Any, Optional

from ._runner import _T, PollingView


class HistogramView(PollingView[_T]):
    def tracing(self) -> str:
        """The line BCC's tools start with ("Tracing ... Hit Ctrl-C to end.")."""
        raise NotImplementedError

    def text(self, snapshot: Any) -> str:
        """A snapshot's (or a difference of two's) histograms as text."""
        raise NotImplementedError

    def as_dict(self, snapshot: Any) -> dict[str, Any]:
        """A snapshot (or a difference of two) as JSON: the tool's own."""
        raise NotImplementedError

    def banner(self) -> Optional[str]:
        return self.tracing() if self.args.json else None  # in text, the output's first line (as BCC's)

    def header(self) -> str:
        return self.tracing()

    def begin(self) -> None:
        self.first = self.previous = self.now = self.tool.snapshot()

    def update(self) -> None:
        self.previous, self.now = self.now, self.tool.snapshot()

    def record(self) -> dict[str, Any]:
        delta = self.now - self.previous
        return {"seconds": round(delta.time, 3), **self.as_dict(delta)}

    def line(self) -> str:
        return f"\n{time.strftime('%H:%M:%S')}\n{self.text(self.now - self.previous)}"

    def final(self) -> dict[str, Any]:
        self.update()
        self.whole = self.now - self.first
        return self.as_dict(self.whole)

    def text_summary(self, final: dict[str, Any]) -> str:
        whole = f"\nwhole run ({self.whole.time:.1f} s):\n" if self.args.interval else ""
        return f"{whole}{self.text(self.whole)}\n{self.summary(final)}"
