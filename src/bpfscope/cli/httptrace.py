"""`bpfscope httptrace`'s view: one line (or JSON object) per request as its exchange ends, a live table
of the newest on a terminal; and at the end a summary per path and side: requests, status classes,
latency percentiles."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Any

from ..tools.httptrace import Request, Tracer, percentile
from ._runner import StreamingView

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "none")
HEADER = (f"{'TIME':<12} {'PID':>7} {'COMM':<15} {'SIDE':<6} {'TLS':<3} {'METHOD':<7} {'STATUS':>6} "
          f"{'REQ':>7} {'RESP':>9} {'LATENCY':>10}  PATH")


@dataclass
class _PathStats:
    requests: int = 0
    statuses: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUS_CLASSES, 0))
    latencies: list[float] = field(default_factory=list)


def _scope(tracer: Tracer) -> str:
    who = f"pid {tracer.pid}" if tracer.pid is not None else "all processes"
    port = f", port {tracer.port}" if tracer.port is not None else ""
    tls = f"OpenSSL at {', '.join(tracer.libssl)}" if tracer.libssl else "no OpenSSL"
    return f"{who}{port} (syscalls; {tls})"


def _latency(request: Request) -> str:
    return f"{request.latency * 1000:.3f}ms" if request.latency is not None else "-"


def _line(r: Request) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(r.time)) + f".{int(r.time * 1000) % 1000:03d}"
    return (f"{stamp:<12} {r.pid:>7} {r.comm:<15} {r.side:<6} {'yes' if r.tls else 'no':<3} {r.method:<7} "
            f"{r.status or '-':>6} {r.request_bytes:>7} {r.response_bytes:>9} {_latency(r):>10}  {r.path}\n")


class HttpView(StreamingView[Tracer]):
    columns = ("time", "pid", "comm", "side", "method", "path", "status", "req", "resp", "latency")

    def __init__(self, tracer: Tracer, args: argparse.Namespace) -> None:
        super().__init__(tracer, args)
        self.paths: dict[tuple[str, str], _PathStats] = {}

    def banner(self) -> str:
        return f"bpfscope httptrace on {_scope(self.tool)} — Ctrl-C to stop"

    def header(self) -> str:
        return HEADER

    def take(self, batch: list[Request]) -> None:
        super().take(batch)
        for request in batch:
            stats = self.paths.setdefault((request.path, request.side), _PathStats())
            stats.requests += 1
            stats.statuses[f"{request.status // 100}xx" if request.status else "none"] += 1
            if request.latency is not None:
                stats.latencies.append(request.latency)

    def text_lines(self, batch: list[Request]) -> bytes:
        return "".join(_line(r) for r in batch).encode()

    def title(self) -> str:
        return (f"bpfscope httptrace on {_scope(self.tool)} — {self.events:,} requests, {self.tool.lost:,} lost "
                "— Ctrl-C to stop")

    def rows(self) -> list[list[Any]]:
        return [[time.strftime("%H:%M:%S", time.localtime(r.time)), r.pid, r.comm, r.side + (" tls" if r.tls else ""),
                 r.method, r.path, r.status or "-", f"{r.request_bytes:,}", f"{r.response_bytes:,}", _latency(r)]
                for r in self.recent]

    def final(self) -> dict[str, Any]:
        counts = self.tool.counts()
        paths = []
        for (path, side), stats in sorted(self.paths.items(), key=lambda item: (-item[1].requests, item[0])):
            lat = stats.latencies
            paths.append({"path": path, "side": side, "requests": stats.requests,
                          "status": {k: v for k, v in stats.statuses.items() if v},
                          "p50_ms": round(percentile(lat, 50) * 1000, 3) if lat else None,
                          "p99_ms": round(percentile(lat, 99) * 1000, 3) if lat else None})
        return {"requests": self.events, "heads": counts.heads, "skipped": counts.skipped, "paths": paths}

    def summary(self, final: dict[str, Any]) -> str:
        return (f"{final['requests']:,} requests in {final['seconds']:.1f} s, {final['lost']:,} records lost, "
                f"{final['missed']:,} program runs the kernel skipped, "
                f"{final['skipped']:,} heads skipped (not a socket or not on --port)")

    def text_summary(self, final: dict[str, Any]) -> str:
        lines = [self.summary(final)]
        if final["paths"]:
            lines.append(f"  {'PATH':<32} {'SIDE':<6} {'REQS':>6}  {'P50':>10} {'P99':>10}  STATUS")
        for p in final["paths"]:
            statuses = " ".join(f"{k}:{v}" for k, v in p["status"].items())
            p50 = f"{p['p50_ms']:.3f}ms" if p["p50_ms"] is not None else "-"
            p99 = f"{p['p99_ms']:.3f}ms" if p["p99_ms"] is not None else "-"
            lines.append(f"  {p['path']:<32} {p['side']:<6} {p['requests']:>6}  {p50:>10} {p99:>10}  {statuses}")
        return "\n".join(lines)


def view(tracer: Tracer, args: argparse.Namespace) -> HttpView:
    return HttpView(tracer, args)
