"""`bpfscope oomkill`'s view: one line per OOM kill (or a JSON object, or the newest kills as a live
table on a terminal), and at the end the kills seen beside the kernel's own count of them."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ..output.units import count_of
from ..tools.oomkill import PAGE_KB, OomKill, OomKillTracer, oom_kills
from ._runner import StreamingView
from .options import unseen


def _mib(pages: int) -> str:
    return f"{pages * PAGE_KB / 1024:.1f}"


class OomKillView(StreamingView[OomKillTracer]):
    columns = ("time", "pid", "comm", "rss MiB", "of MiB", "limit hit", "cgroup", "trigger")

    def filters(self) -> str:
        t = self.tool
        shown = [f"pid {t.pid}" if t.pid is not None else "", f"comm {t.comm!r}" if t.comm is not None else "",
                 f"cgroup {t.cgroup_id}" if t.cgroup_id is not None else ""]
        return f" ({', '.join(s for s in shown if s)})" if any(shown) else ""

    def banner(self) -> str:
        return f"bpfscope oomkill: tracing OOM kills{self.filters()} — Ctrl-C to stop"

    def title(self) -> str:
        return f"bpfscope oomkill{self.filters()}: {count_of(self.events, 'kill')} — Ctrl-C to stop"

    def header(self) -> str:
        return self.tool.HEADER

    def row(self, kill: OomKill) -> list[Any]:
        return [time.strftime("%H:%M:%S", time.localtime(kill.time)), kill.pid, kill.comm, _mib(kill.rss_pages),
                _mib(kill.totalpages), kill.oom_cgroup if kill.oom_cgroup is not None else "system", kill.cgroup,
                f"{kill.trigger_pid} {kill.trigger_comm}"]

    def final(self) -> dict[str, Any]:
        # The kernel's count covers every kill on the machine, the filters' and the run's edges aside.
        return {"kills": self.events, "kernel_oom_kills": oom_kills() - self.tool.kernel_kills_at_open}

    def summary(self, final: dict[str, Any]) -> str:
        return (f"oomkill: {count_of(final['kills'], 'kill')} (the kernel counted {final['kernel_oom_kills']:,} "
                f"in all), {unseen(final)} in {final['seconds']:.1f} s")


def view(tracer: OomKillTracer, args: argparse.Namespace) -> OomKillView:
    return OomKillView(tracer, args)
