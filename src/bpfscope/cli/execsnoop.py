"""`bpfscope execsnoop`'s view: every execve and execveat as it returns (pid, parent, uid, result, comm,
command line), a line each or a live table of the newest; and the counts of execs and failures at the end."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ..tools.execsnoop import Exec, ExecSnoop
from ._runner import StreamingView
from .options import unseen

_HEADER = f"{'TIME':<8} {'PID':>7} {'PPID':>7} {'UID':>5} {'RET':>7} {'COMM':<15} COMMAND"


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


class ExecsView(StreamingView[ExecSnoop]):
    columns = ("time", "pid", "ppid", "uid", "ret", "comm", "command")

    def __init__(self, snoop: ExecSnoop, args: argparse.Namespace) -> None:
        super().__init__(snoop, args)
        self.failed = 0

    def banner(self) -> str:
        return f"bpfscope execsnoop: tracing execve and execveat ({self.tool.filters.describe()}) — Ctrl-C to stop"

    def header(self) -> str:
        return _HEADER

    def title(self) -> str:
        return (f"bpfscope execsnoop ({self.tool.filters.describe()}) — {self.events:,} execs, "
                f"{self.failed:,} failed, {self.tool.lost:,} lost — Ctrl-C to stop")

    def take(self, batch: list[Exec]) -> None:
        super().take(batch)
        self.failed += sum(e.failed for e in batch)

    def row(self, e: Exec) -> list[Any]:
        return [_clock(e.time), e.pid, e.ppid, e.uid, e.error or e.ret, e.comm, e.command_line()]

    def text_lines(self, batch: list[Exec]) -> bytes:
        return "".join(f"{_clock(e.time):<8} {e.pid:>7} {e.ppid:>7} {e.uid:>5} {e.error or e.ret:>7} {e.comm:<15} "
                       f"{e.command_line()}\n" for e in batch).encode()

    def final(self) -> dict[str, Any]:
        f = self.tool.filters
        return {"execs": self.events, "failed": self.failed,
                "filters": {"comm": f.comm, "uid": f.uid, "ppid": f.ppid, "cgroup_id": f.cgroup_id,
                            "failed_only": f.failed_only}}

    def summary(self, final: dict[str, Any]) -> str:
        ok = final["execs"] - final["failed"]
        return (f"execsnoop: {final['execs']:,} execs ({ok:,} ok, {final['failed']:,} failed), "
                f"{unseen(final)} in {final['seconds']:.1f} s")


def view(snoop: ExecSnoop, args: argparse.Namespace) -> ExecsView:
    return ExecsView(snoop, args)
