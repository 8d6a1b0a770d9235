"""`bpfscope tcp`'s views: each connect, accept, close, retransmit and drop as it happens (one JSON
object per event, "event" its kind); or with --rtt the kernel's counters and the RTT histogram of each
remote, every interval and at the end."""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from typing import Any, Union

import numpy as np

from ..output.units import count_of
from ..tools.tcp import EVENT_KINDS, TcpTracer
from ._runner import PollingView, StreamingView
from .options import unseen

TOP_REMOTES = 10  # histograms printed


def _clock(seconds: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(seconds)) + f".{int(seconds % 1 * 1e6):06d}"


def _endpoints(r: dict[str, Any]) -> str:
    return f"{r['saddr']}:{r['sport']} -> {r['daddr']}:{r['dport']}"


def _detail(r: dict[str, Any]) -> str:
    kind = r["event"]
    if kind == "connect":
        return f"pid {r['pid']} {r['comm']} handshake {r['handshake_us']} us"
    if kind == "accept":
        return f"SYN-ACK rtt {r['handshake_us']} us"
    if kind == "close":
        return (f"{r['side']} {r['duration_ms']} ms sent {r['bytes_sent']:,} B received {r['bytes_received']:,} B "
                f"srtt {r['rtt_us']} us (from {r['state']})")
    if kind == "retransmit":
        return f"{r['state']} {count_of(r['segments'], 'segment')}"
    return str(r["reason"])


class EventsView(StreamingView[TcpTracer]):
    def __init__(self, tool: TcpTracer, args: argparse.Namespace) -> None:
        super().__init__(tool, args)
        self.by_kind: Counter[str] = Counter()

    def banner(self) -> str:
        return f"bpfscope tcp: tracing {','.join(self.tool.events)} — Ctrl-C to stop"

    def header(self) -> str:
        return f"{'TIME':<15} {'EVENT':<10} {'CONNECTION':<47} DETAIL"

    def take(self, batch: np.ndarray[Any, Any]) -> None:
        self.events += len(batch)
        self.by_kind.update(EVENT_KINDS[k] for k in batch["kind"].tolist())

    def json_lines(self, batch: np.ndarray[Any, Any]) -> bytes:
        return b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in self.tool.records(batch))

    def text_lines(self, batch: np.ndarray[Any, Any]) -> bytes:
        return "".join(f"{_clock(r['time'])} {r['event']:<10} {_endpoints(r):<47} {_detail(r)}\n"
                       for r in self.tool.records(batch)).encode("utf-8", "backslashreplace")

    def final(self) -> dict[str, Any]:
        return {"events": self.events, "by_event": {k: self.by_kind[k] for k in self.tool.events},
                **self.tool.counts().as_dict()}

    def summary(self, final: dict[str, Any]) -> str:
        return (f"tcp: {count_of(final['events'], 'event')} ({final['opened']:,} connected, {final['accepted']:,} "
                f"accepted, {final['closed']:,} closed, {final['retransmits']:,} retransmitted, "
                f"{sum(final['drops'].values()):,} dropped), {unseen(final)} in {final['seconds']:.1f} s")


class RttView(PollingView[TcpTracer]):
    def banner(self) -> str:
        return "bpfscope tcp --rtt: counting in the kernel — Ctrl-C to stop"

    def line(self) -> str:
        c = self.now
        return (f"after {self.seconds:.1f} s: {c.opened:,} connected, {c.accepted:,} accepted, {c.closed:,} closed, "
                f"{c.retransmits:,} retransmitted, drops {dict(sorted(c.drops.items()))}")

    def summary(self, final: dict[str, Any]) -> str:
        return (f"tcp --rtt: {final['opened']:,} connected, {final['accepted']:,} accepted, {final['closed']:,} "
                f"closed, {count_of(len(final['rtt_us']), 'remote')}, {unseen(final)} in {final['seconds']:.1f} s")

    def text_summary(self, final: dict[str, Any]) -> str:
        lines = []
        histograms = self.tool.histograms(self.now)
        for remote, histogram in list(histograms.items())[:TOP_REMOTES]:
            lines.append(f"srtt at close, remote {remote}:")
            lines += histogram.lines()
        if len(histograms) > TOP_REMOTES:
            lines.append(f"… and {count_of(len(histograms) - TOP_REMOTES, 'more remote')}")
        return "\n".join([*lines, self.summary(final)])


def view(tool: TcpTracer, args: argparse.Namespace) -> Union[EventsView, RttView]:
    return RttView(tool, args) if tool.rtt else EventsView(tool, args)
