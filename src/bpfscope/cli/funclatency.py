"""`bpfscope funclatency TARGET:SYMBOL`: a log2 histogram of how long a function takes, printed at
the end (Ctrl-C, SIGTERM or --duration) and, with --interval, for every interval."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Optional

from ..output.jsonlines import emit
from ..tools._base import positive_float
from ..tools.funclatency import FunctionLatency, LatencySnapshot, Unit, parse_target
from .options import stop_on_sigterm, ticks


def target_symbol(text: str) -> tuple[str, str]:
    try:
        return parse_target(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def pid_number(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a process id")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("function", type=target_symbol, metavar="TARGET:SYMBOL",
                        help="a binary path or a library name, and a function: libc:malloc, /usr/bin/app:main")
    parser.add_argument("--pid", type=pid_number, help="only calls made by this process")
    parser.add_argument("--unit", choices=[u.value for u in Unit], default=Unit.USECS.value,
                        help="histogram unit (default: us)")
    parser.add_argument("--interval", type=positive_float, metavar="S",
                        help="also print each interval's histogram, every S seconds")
    parser.add_argument("--duration", type=positive_float, metavar="S", help="stop after S seconds")
    parser.add_argument("--json", action="store_true", help="one JSON object per interval, and a final one")


def run(args: argparse.Namespace) -> int:
    target, symbol = args.function
    with stop_on_sigterm(), FunctionLatency(target, symbol, pid=args.pid, unit=Unit(args.unit)) as tracer:
        first = tracer.snapshot()
        where = f"{tracer.path}:{symbol}" + (f" in pid {args.pid}" if args.pid else "")
        print(f"Tracing {where} (uprobe + uretprobe)... Hit Ctrl-C to end.",
              file=sys.stderr if args.json else sys.stdout, flush=True)
        try:
            _wait(tracer, first, args.interval, args.duration, as_json=args.json)
        except KeyboardInterrupt:
            pass
        final = tracer.snapshot() - first
    if args.json:
        emit({"time": round(time.time(), 3), "final": True, "seconds": round(final.time, 3), **tracer.as_dict(final)})
    else:
        if args.interval:
            print(f"\nwhole run ({final.time:.1f} s):")
        _print(final)
    return 0


def _wait(tracer: FunctionLatency, first: LatencySnapshot, interval: Optional[float], duration: Optional[float],
          *, as_json: bool) -> None:
    """Until the duration ends (or Ctrl-C), printing each interval; a traced pid that exits ends it too."""
    step = interval or (0.2 if tracer.pid else duration or 3600.0)
    previous = first
    for _ in ticks(step, duration):
        if interval:
            now = tracer.snapshot()
            delta = now - previous
            if as_json:
                emit({"time": round(time.time(), 3), "seconds": round(delta.time, 3), **tracer.as_dict(delta)})
            else:
                print(f"\n{time.strftime('%H:%M:%S')}")
                _print(delta)
            previous = now
        if tracer.pid and not os.path.exists(f"/proc/{tracer.pid}"):
            print(f"process {tracer.pid} exited", file=sys.stderr)
            return


def _print(snap: LatencySnapshot) -> None:
    hist = snap.histogram
    for line in hist.lines():
        print(line)
    print(hist.summary())
    notes = [f"{n:,} {what}" for n, what in ((snap.too_deep, "calls nested too deep to time"),
                                              (snap.unmatched, "returns of calls entered before attach"),
                                              (snap.untracked, "calls lost to a full thread table"),
                                              (snap.missed, "probe runs the kernel skipped")) if n]
    if notes:
        print("not timed: " + ", ".join(notes))
    sys.stdout.flush()
