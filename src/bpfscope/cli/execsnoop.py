"""`bpfscope execsnoop`: every execve and execveat on the machine, successful or failed, as it
returns: pid, parent, uid, comm, path, arguments, result and cgroup; until Ctrl-C or --duration."""

from __future__ import annotations

import argparse
import errno
import os
import pwd
import sys
import time
from collections import deque
from typing import Any, Callable, Optional

from ..errors import BpfscopeError
from ..mounts import mounts
from ..output.jsonlines import emit
from ..tools._base import positive_float, ring_bytes
from ..tools.execsnoop import ARG_BYTES, COMM_BYTES, DEFAULT_RING_BYTES, MAX_ARGS, Exec, ExecSnoop, Filters, Limits
from .options import StopFlag, stop_flag, ticks, unseen

SHOWN_EXECS = 20  # rows of the live view: the newest execs, scrolling up
_HEADER = f"{'TIME':<8} {'PID':>7} {'PPID':>7} {'UID':>5} {'RET':>7} {'COMM':<15} COMMAND"


def _whole(text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{text!r} must be from {low} to {high}")
    return value


def user_id(text: str) -> int:
    """A uid, or a user name from the password database."""
    if text.isdigit():
        return _whole(text, 0, 2**32 - 2)  # (uid_t)-1 is no uid
    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        raise argparse.ArgumentTypeError(f"no user {text!r} (give a name or a number)") from None


def process_id(text: str) -> int:
    return _whole(text, 1, 2**22)  # PID_MAX_LIMIT


def program_name(text: str) -> str:
    if not text or "/" in text or "\0" in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a program name (a file name without '/')")
    return text


def max_args(text: str) -> int:
    return _whole(text, 1, MAX_ARGS)


def arg_bytes(text: str) -> int:
    return _whole(text, 2, ARG_BYTES)


def cgroup_id(path: str) -> int:
    """The id of the cgroup v2 directory at `path`: its inode number, which is what
    bpf_get_current_cgroup_id returns."""
    real = os.path.realpath(path)
    roots = [m.target for m in mounts() if m.fstype == "cgroup2"]
    if not roots:
        raise BpfscopeError(errno.ENOENT, "no cgroup v2 file system is mounted, so --cgroup cannot be used")
    if not os.path.isdir(real):
        raise BpfscopeError(errno.ENOENT, f"--cgroup {path}: no such directory")
    if not any(real == root or real.startswith(root.rstrip("/") + "/") for root in roots):
        raise BpfscopeError(errno.EINVAL, f"--cgroup {path}: not a cgroup v2 directory (under {', '.join(roots)})")
    return os.stat(real).st_ino


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", type=program_name, metavar="NAME",
                        help=f"only programs named NAME: the last component of the path executed, as the kernel "
                             f"names the process (cut at {COMM_BYTES - 1} bytes)")
    parser.add_argument("--uid", type=user_id, metavar="USER", help="only execs by this user (name or uid)")
    parser.add_argument("--ppid", type=process_id, metavar="PID", help="only execs by children of process PID")
    parser.add_argument("--cgroup", metavar="PATH",
                        help="only execs in the cgroup v2 at PATH (e.g. /sys/fs/cgroup/system.slice/foo.service)")
    parser.add_argument("--failed", action="store_true", help="only execs that failed")
    parser.add_argument("--max-args", type=max_args, default=MAX_ARGS, metavar="N",
                        help=f"arguments kept per exec; more are marked with … (default and most: {MAX_ARGS})")
    parser.add_argument("--arg-bytes", type=arg_bytes, default=ARG_BYTES, metavar="N",
                        help=f"bytes kept per argument, the NUL included; a longer one ends in … "
                             f"(default and most: {ARG_BYTES})")
    parser.add_argument("--interval", type=positive_float, default=0.5, metavar="S",
                        help="seconds between refreshes of the live view (default: 0.5)")
    parser.add_argument("--duration", type=positive_float, metavar="S", help="stop after S seconds")
    parser.add_argument("--json", action="store_true", help="one JSON object per exec, and a final summary")
    # The ring's size, for tests that need it to overflow.
    parser.add_argument("--ring-bytes", type=ring_bytes, default=DEFAULT_RING_BYTES, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    filters = Filters(uid=args.uid, ppid=args.ppid, cgroup_id=cgroup_id(args.cgroup) if args.cgroup else None,
                      name=args.name, failed_only=args.failed)
    limits = Limits(max_args=args.max_args, arg_bytes=args.arg_bytes)
    start = time.monotonic()
    with stop_flag() as stop, ExecSnoop(filters=filters, limits=limits, ring_bytes=args.ring_bytes) as snoop:
        live = not args.json and sys.stdout.isatty()
        if not live:  # the live view's title says it
            print(f"bpfscope execsnoop: tracing execve and execveat ({filters.describe()}) — Ctrl-C to stop",
                  file=sys.stderr, flush=True)
        if not live and not args.json:
            print(_HEADER, flush=True)
        view = _View(snoop, stop, None if live else _print_json if args.json else _print_line)
        if live:
            view.show_live(args.interval, args.duration)
        else:
            view.stream(args.duration)
        view.drain()  # what came between the last poll and the stop
        summary = view.summary(time.monotonic() - start)
    if args.json:
        emit(summary)
    print(_summary_line(summary), file=sys.stderr if args.json else sys.stdout)
    return 0


class _View:
    def __init__(self, snoop: ExecSnoop, stop: StopFlag, show: Optional[Callable[[Exec], None]]) -> None:
        self.snoop = snoop
        self.stop = stop
        self.show = show
        self.execs = 0
        self.failed = 0
        self.recent: deque[Exec] = deque(maxlen=SHOWN_EXECS)

    def poll(self, timeout_ms: int) -> list[Exec]:
        execs = self.snoop.poll(timeout_ms)
        self.recent.extend(execs)
        if self.show is not None:
            for e in execs:
                self.show(e)
        self.execs += len(execs)
        self.failed += sum(e.failed for e in execs)
        return execs

    def stream(self, duration: Optional[float]) -> None:
        end = time.monotonic() + duration if duration else float("inf")
        while not self.stop.requested:
            left = end - time.monotonic()
            if left <= 0:
                return
            self.poll(int(min(left, 0.1) * 1000))

    def show_live(self, interval: float, duration: Optional[float]) -> None:
        from ..output.live import LiveTable

        with LiveTable(self._title(), ["time", "pid", "ppid", "uid", "ret", "comm", "command"]) as live:
            for _ in ticks(interval, duration):
                if self.stop.requested:
                    return
                while self.poll(0):
                    pass
                rows = [[_clock(e.time), e.pid, e.ppid, e.uid, e.error or e.ret, e.comm, e.command_line()]
                        for e in self.recent]
                live.update(rows, title=self._title())

    def _title(self) -> str:
        return (f"bpfscope execsnoop ({self.snoop.filters.describe()}) — {self.execs:,} execs, "
                f"{self.failed:,} failed, {self.snoop.lost:,} lost — Ctrl-C to stop")

    def drain(self) -> None:
        while self.poll(0):
            pass

    def summary(self, seconds: float) -> dict[str, Any]:
        f = self.snoop.filters
        return {"time": round(time.time(), 3), "final": True, "seconds": round(seconds, 3), "execs": self.execs,
                "failed": self.failed, "lost": self.snoop.lost, "missed": self.snoop.obj.missed_runs(),
                "filters": {"name": f.name, "uid": f.uid, "ppid": f.ppid, "cgroup_id": f.cgroup_id,
                            "failed_only": f.failed_only}}


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def _print_json(e: Exec) -> None:
    emit(e.as_dict())


def _print_line(e: Exec) -> None:
    print(f"{_clock(e.time):<8} {e.pid:>7} {e.ppid:>7} {e.uid:>5} {e.error or e.ret:>7} {e.comm:<15} "
          f"{e.command_line()}", flush=True)


def _summary_line(summary: dict[str, Any]) -> str:
    ok = summary["execs"] - summary["failed"]
    return (f"execsnoop: {summary['execs']:,} execs ({ok:,} ok, {summary['failed']:,} failed), "
            f"{unseen(summary)} in {summary['seconds']:.1f} s")
