"""`bpfscope httptrace`: HTTP/1.x requests of any process, plain (socket syscalls) and HTTPS
(OpenSSL uprobes), one line per request as its exchange ends, until Ctrl-C or --duration; then a
summary per path: requests, status classes, latency percentiles."""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ..output.jsonlines import emit
from ..tools._base import pid_number, positive_float, ring_bytes
from ..tools.httptrace import DEFAULT_RING_BYTES, Request, Tracer, percentile
from .options import StopFlag, stop_flag, stop_on_sigterm, ticks

SHOWN_REQUESTS = 20  # rows of the live view: the newest requests
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "none")


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1 to 65535)")
    return value


def milliseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of milliseconds") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pid", type=pid_number, help="only this process (its threads, not its children)")
    parser.add_argument("--port", type=port_number,
                        help="only connections with this local or remote port")
    parser.add_argument("--min-latency", type=milliseconds, default=0.0, metavar="MS",
                        help="show and summarize only requests whose response took at least MS milliseconds "
                             "(and those without a response)")
    parser.add_argument("--no-tls", dest="tls", action="store_false",
                        help="plain HTTP only: no uprobes on OpenSSL")
    parser.add_argument("--interval", type=positive_float, default=0.5, metavar="S",
                        help="seconds between refreshes of the live view (default: 0.5)")
    parser.add_argument("--duration", type=positive_float, metavar="S", help="stop after S seconds")
    parser.add_argument("--json", action="store_true", help="one JSON object per request, and a final summary")
    parser.add_argument("--ring-bytes", type=ring_bytes, default=DEFAULT_RING_BYTES, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    start = time.monotonic()
    with stop_on_sigterm(), Tracer(pid=args.pid, port=args.port, tls=args.tls, ring_bytes=args.ring_bytes) as tracer:
        live = not args.json and sys.stdout.isatty()
        if not live:  # the live view's title says it
            print(f"bpfscope httptrace on {_scope(tracer)} — Ctrl-C to stop", file=sys.stderr, flush=True)
            if not args.json:
                print(_HEADER, flush=True)
        with stop_flag() as stop:
            view = _View(tracer, stop, args.min_latency / 1000,
                         None if live else _print_json if args.json else _print_line)
            if live:
                view.show_live(args.interval, args.duration)
            else:
                view.stream(args.duration)
            view.finish()
            summary = view.summary(time.monotonic() - start)
    if args.json:
        emit(summary)
    else:
        print(_summary_text(summary))
    return 0


def _scope(tracer: Tracer) -> str:
    who = f"pid {tracer.pid}" if tracer.pid is not None else "all processes"
    port = f", port {tracer.port}" if tracer.port is not None else ""
    tls = f"OpenSSL at {', '.join(tracer.libssl)}" if tracer.libssl else "no OpenSSL"
    return f"{who}{port} (syscalls; {tls})"


@dataclass
class _PathStats:
    requests: int = 0
    statuses: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUS_CLASSES, 0))
    latencies: list[float] = field(default_factory=list)


class _View:
    def __init__(self, tracer: Tracer, stop: StopFlag, min_latency: float,
                 show: Optional[Callable[[Request], None]]) -> None:
        self.tracer = tracer
        self.stop = stop
        self.min_latency = min_latency
        self.show = show
        self.recent: deque[Request] = deque(maxlen=SHOWN_REQUESTS)
        self.paths: dict[tuple[str, str], _PathStats] = {}
        self.total = 0

    def take(self, requests: list[Request]) -> None:
        for request in requests:
            if request.latency is not None and request.latency < self.min_latency:
                continue
            self.total += 1
            self.recent.append(request)
            stats = self.paths.setdefault((request.path, request.side), _PathStats())
            stats.requests += 1
            stats.statuses[f"{request.status // 100}xx" if request.status else "none"] += 1
            if request.latency is not None:
                stats.latencies.append(request.latency)
            if self.show is not None:
                self.show(request)

    def stream(self, duration: Optional[float]) -> None:
        end = time.monotonic() + duration if duration else float("inf")
        while not self.stop.requested and (left := end - time.monotonic()) > 0:
            self.take(self.tracer.poll(int(min(left, 0.1) * 1000)))

    def show_live(self, interval: float, duration: Optional[float]) -> None:
        from ..output.live import LiveTable

        columns = ["time", "pid", "comm", "side", "method", "path", "status", "req", "resp", "latency"]
        with LiveTable(self._title(), columns) as live:
            for _ in ticks(interval, duration):
                if self.stop.requested:
                    return
                while True:
                    requests = self.tracer.poll(0)
                    self.take(requests)
                    if not requests:
                        break
                live.update([_row(r) for r in self.recent], title=self._title())

    def _title(self) -> str:
        return (f"bpfscope httptrace on {_scope(self.tracer)} — {self.total:,} requests, "
                f"{self.tracer.lost:,} lost — Ctrl-C to stop")

    def finish(self) -> None:
        """What came between the last poll and the stop, and the exchanges still open."""
        self.take(self.tracer.poll(0))
        self.take(self.tracer.flush())

    def summary(self, seconds: float) -> dict[str, Any]:
        counts = self.tracer.counts()
        paths = []
        for (path, side), stats in sorted(self.paths.items(), key=lambda item: (-item[1].requests, item[0])):
            lat = stats.latencies
            paths.append({"path": path, "side": side, "requests": stats.requests,
                          "status": {k: v for k, v in stats.statuses.items() if v},
                          "p50_ms": round(percentile(lat, 50) * 1000, 3) if lat else None,
                          "p99_ms": round(percentile(lat, 99) * 1000, 3) if lat else None})
        return {"time": round(time.time(), 3), "final": True, "seconds": round(seconds, 3),
                "requests": self.total, "heads": counts.heads, "skipped": counts.skipped, "lost": counts.lost,
                "missed": counts.missed, "paths": paths}


_HEADER = (f"{'TIME':<12} {'PID':>7} {'COMM':<15} {'SIDE':<6} {'TLS':<3} {'METHOD':<7} {'STATUS':>6} "
           f"{'REQ':>7} {'RESP':>9} {'LATENCY':>10}  PATH")


def _latency(request: Request) -> str:
    return f"{request.latency * 1000:.3f}ms" if request.latency is not None else "-"


def _row(r: Request) -> list[Any]:
    return [time.strftime("%H:%M:%S", time.localtime(r.time)), r.pid, r.comm, r.side + (" tls" if r.tls else ""),
            r.method, r.path, r.status or "-", f"{r.request_bytes:,}", f"{r.response_bytes:,}", _latency(r)]


def _print_line(r: Request) -> None:
    stamp = time.strftime("%H:%M:%S", time.localtime(r.time)) + f".{int(r.time * 1000) % 1000:03d}"
    print(f"{stamp:<12} {r.pid:>7} {r.comm:<15} {r.side:<6} {'yes' if r.tls else 'no':<3} {r.method:<7} "
          f"{r.status or '-':>6} {r.request_bytes:>7} {r.response_bytes:>9} {_latency(r):>10}  {r.path}", flush=True)


def _print_json(r: Request) -> None:
    emit(r.as_dict())


def _summary_text(summary: dict[str, Any]) -> str:
    lines = [f"{summary['requests']:,} requests in {summary['seconds']:.1f} s, {summary['lost']:,} records lost, "
             f"{summary['missed']:,} program runs the kernel skipped, "
             f"{summary['skipped']:,} heads skipped (not a socket or not on --port)"]
    if summary["paths"]:
        lines.append(f"  {'PATH':<32} {'SIDE':<6} {'REQS':>6}  {'P50':>10} {'P99':>10}  STATUS")
    for p in summary["paths"]:
        statuses = " ".join(f"{k}:{v}" for k, v in p["status"].items())
        p50 = f"{p['p50_ms']:.3f}ms" if p["p50_ms"] is not None else "-"
        p99 = f"{p['p99_ms']:.3f}ms" if p["p99_ms"] is not None else "-"
        lines.append(f"  {p['path']:<32} {p['side']:<6} {p['requests']:>6}  {p50:>10} {p99:>10}  {statuses}")
    return "\n".join(lines)
