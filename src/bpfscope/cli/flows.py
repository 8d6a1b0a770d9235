"""`bpfscope flows`'s view: per-flow packets, bytes and TCP flags in and out of one interface, a live
top N on a terminal, one line per interval otherwise; and the top flows at the end."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ..output.units import si
from ..tools.flows import Flow, FlowSnapshot, FlowTracker, flag_names
from ._runner import PollingView
from .options import unseen


class FlowsView(PollingView[FlowTracker]):
    columns = ("flow", "rate", "packets in", "bytes in", "packets out", "bytes out", "tcp flags in/out", "idle")

    def begin(self) -> None:
        self.now: FlowSnapshot = self.tool.snapshot()  # the baseline of the first interval's rates

    def update(self) -> None:
        self.now = self.tool.snapshot(expire_idle=self.tool.idle)

    def _top(self) -> list[Flow]:
        return self.now.top(self.tool.top, self.tool.sort)

    def _header(self) -> dict[str, Any]:
        t = self.tool
        return {"iface": t.iface, "mode": t.mode.value, "flows": len(self.now), "max_flows": t.max_flows,
                "sort": t.sort.value}

    def record(self) -> dict[str, Any]:
        return {**self._header(), "expired": self.now.expired, "top": [f.as_dict() for f in self._top()]}

    def line(self) -> str:
        snap = self.now
        packets = snap.total("packets_in") + snap.total("packets_out")
        octets = snap.total("bytes_in") + snap.total("bytes_out")
        rate = float(snap.stats["rate"].sum())
        return f"{self.tool.iface}: {len(snap)} flows, {packets} packets, {octets} bytes, {rate:.0f} B/s"

    def title(self) -> str:
        t = self.tool
        return (f"bpfscope flows on {t.iface} (tc {t.mode.value}) — {len(self.now):,} of {t.max_flows:,} flows, "
                f"top {t.top} by {t.sort.value} — Ctrl-C to stop")

    def rows(self) -> list[list[Any]]:
        now = time.time()
        return [[f.endpoints(), si(f.rate * 8, "bit/s"), f"{f.packets_in:,}", si(f.bytes_in, "B"),
                 f"{f.packets_out:,}", si(f.bytes_out, "B"), _flags(f), f"{max(0.0, now - f.last_seen):.1f}s"]
                for f in self._top()]

    def final(self) -> dict[str, Any]:
        self.update()
        self.final_top = self._top()
        return {**self._header(), "top": [f.as_dict() for f in self.final_top]}

    def summary(self, final: dict[str, Any]) -> str:
        return f"Total flow count: {final['flows']}, {unseen(final)}"

    def text_summary(self, final: dict[str, Any]) -> str:
        lines = [self.summary(final)]
        if self.final_top:
            lines.append(f"  top {len(self.final_top)} by {final['sort']} (in / out):")
        for f in self.final_top:
            lines.append(f"    {f.endpoints():<52} {f.packets_in:>10,} / {f.packets_out:<10,} packets "
                         f"{f.bytes_in:>13,} / {f.bytes_out:<13,} bytes  {_flags(f)}")
        return "\n".join(lines)


def _flags(flow: Flow) -> str:
    if flow.proto != "tcp":
        return ""
    return f"{flag_names(flow.tcp_flags_in) or '-'} / {flag_names(flow.tcp_flags_out) or '-'}"


def view(tracker: FlowTracker, args: argparse.Namespace) -> FlowsView:
    return FlowsView(tracker, args)
