"""`bpfscope opensnoop`: every open, openat and openat2 as it returns (pid, tid, comm, fd or error,
flags, path), filtered in the kernel; or with --count, opens per comm counted in the kernel and
printed at each --interval and at the end. Runs until Ctrl-C, SIGTERM or the end of --duration."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, BinaryIO

from ..output.jsonlines import emit
from ..output.units import count_of
from ..tools._base import pid_number, positive_float, ring_bytes
from ..tools.opensnoop import COMM_BYTES, DEFAULT_RING_BYTES, PATH_BYTES, CommCount, Filters, Snoop
from .options import StopFlag, stop_flag, unseen

TOP_COMMS = 20  # rows of the count table


def comm(text: str) -> str:
    if not text or len(text.encode()) >= COMM_BYTES:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 to {COMM_BYTES - 1} bytes (a comm's length)")
    return text


def path_prefix(text: str) -> str:
    if not text or len(text.encode("utf-8", "surrogateescape")) >= PATH_BYTES:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 to {PATH_BYTES - 1} bytes")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pid", type=pid_number, metavar="PID", help="only this process (all its threads)")
    parser.add_argument("--comm", type=comm, metavar="NAME",
                        help=f"only tasks whose comm is exactly NAME (at most {COMM_BYTES - 1} bytes)")
    parser.add_argument("--failed", action="store_true", help="only opens that failed")
    parser.add_argument("--path-prefix", type=path_prefix, metavar="PREFIX",
                        help="only paths that start with PREFIX, as passed to the call (a relative path "
                             "stays relative)")
    parser.add_argument("--count", action="store_true",
                        help="count opens and failures per comm in the kernel; print no events")
    parser.add_argument("--interval", type=positive_float, metavar="S",
                        help="with --count: print the counts every S seconds too")
    parser.add_argument("--duration", type=positive_float, metavar="S", help="stop after S seconds")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per open (with --count: per interval), and a final summary")
    # The ring's size, for tests that need it to overflow and benchmarks that need it large.
    parser.add_argument("--ring-bytes", type=ring_bytes, default=DEFAULT_RING_BYTES, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    filters = Filters(pid=args.pid, comm=args.comm, failed=args.failed, path_prefix=args.path_prefix)
    start = time.monotonic()
    with stop_flag() as stopped, Snoop(filters, count=args.count, ring_bytes=args.ring_bytes) as snoop:
        # On stderr, so stdout holds only events; a reader of stderr knows from it that tracing began.
        print(f"bpfscope opensnoop: {'counting' if args.count else 'tracing'} {', '.join(snoop.calls)}"
              f"{_describe(filters)} — Ctrl-C to stop", file=sys.stderr, flush=True)
        if args.count:
            summary = _count(snoop, args, stopped, start)
        else:
            summary = _stream(snoop, args, stopped, start)
    if args.json and sys.stdout is not None:
        emit(summary, sys.stdout)
    print(_summary_line(summary), file=sys.stderr if args.json else sys.stdout, flush=True)
    return 0


def _describe(f: Filters) -> str:
    parts = [f"pid {f.pid}" if f.pid is not None else "", f"comm {f.comm!r}" if f.comm is not None else "",
             "failed only" if f.failed else "", f"paths under {f.path_prefix!r}" if f.path_prefix is not None else ""]
    shown = [p for p in parts if p]
    return f" ({', '.join(shown)})" if shown else ""


def _deadline(args: argparse.Namespace, start: float) -> float:
    return start + args.duration if args.duration else float("inf")


def _stream(snoop: Snoop, args: argparse.Namespace, stopped: StopFlag, start: float) -> dict[str, Any]:
    out: BinaryIO = sys.stdout.buffer  # the formatters make bytes: no text layer per batch
    fmt = snoop.json_lines if args.json else snoop.text_lines
    if not args.json:
        print(snoop.HEADER, flush=True)
    end = _deadline(args, start)
    events = failed = 0
    try:
        while True:
            left = end - time.monotonic()
            final = stopped.requested or left <= 0
            batch = snoop.poll(0 if final else int(min(left, 0.1) * 1000) + 1)
            if len(batch):
                events += len(batch)
                failed += int((batch["ret"] < 0).sum())
                out.write(fmt(batch))
                out.flush()
            if final and not len(batch):
                break  # stopped, and the ring is empty
    except BrokenPipeError:  # the reader went away (`| head`): stop as if told to
        sys.stdout = None  # nothing more to flush at exit
    return {"time": round(time.time(), 3), "final": True, "seconds": round(time.monotonic() - start, 3),
            "calls": list(snoop.calls), "events": events, "failed": failed, "lost": snoop.lost,
            "missed": snoop.obj.missed_runs()}


def _count(snoop: Snoop, args: argparse.Namespace, stopped: StopFlag, start: float) -> dict[str, Any]:
    end = _deadline(args, start)
    interval = args.interval or float("inf")
    next_print = start + interval
    while not stopped.requested:
        now = time.monotonic()
        if now >= end:
            break
        if now >= next_print:
            _print_counts(snoop.counts(), args, now - start, final=False, lost=snoop.lost)
            next_print += interval
            continue
        time.sleep(min(0.1, end - now, next_print - now))  # short: a stop is seen within 0.1 s
    counts = snoop.counts()
    seconds = time.monotonic() - start
    if not args.json:
        _print_counts(counts, args, seconds, final=True, lost=snoop.lost)
    return {"time": round(time.time(), 3), "final": True, "seconds": round(seconds, 3), "calls": list(snoop.calls),
            "opens": sum(c.opens for c in counts), "failed": sum(c.failed for c in counts), "lost": snoop.lost,
            "missed": snoop.obj.missed_runs(), "counts": [vars(c) for c in counts]}


def _print_counts(counts: list[CommCount], args: argparse.Namespace, seconds: float, *, final: bool,
                  lost: int) -> None:
    if args.json:
        emit({"time": round(time.time(), 3), "seconds": round(seconds, 3), "opens": sum(c.opens for c in counts),
              "failed": sum(c.failed for c in counts), "lost": lost, "counts": [vars(c) for c in counts]})
        return
    print(f"{'in' if final else 'after'} {seconds:.1f} s:")
    print(f"  {'COMM':<16} {'OPENS':>12} {'FAILED':>12}")
    for c in counts[:TOP_COMMS]:
        print(f"  {c.comm:<16} {c.opens:>12,} {c.failed:>12,}")
    if len(counts) > TOP_COMMS:
        print(f"  … and {count_of(len(counts) - TOP_COMMS, 'more comm')}")
    sys.stdout.flush()


def _summary_line(summary: dict[str, Any]) -> str:
    calls = ", ".join(summary["calls"])
    if "counts" in summary:
        return (f"opensnoop --count ({calls}): {count_of(summary['opens'], 'open')} ({summary['failed']:,} failed) "
                f"by {count_of(len(summary['counts']), 'comm')}, {unseen(summary)} in {summary['seconds']:.1f} s")
    return (f"opensnoop ({calls}): {count_of(summary['events'], 'open')} ({summary['failed']:,} failed), "
            f"{unseen(summary)} in {summary['seconds']:.1f} s")

