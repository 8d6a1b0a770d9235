"""`bpfscope packets`'s view: rates and counts by protocol, a live table on a terminal, one line per
interval otherwise; and the totals by protocol at the end."""

from __future__ import annotations

import argparse
from typing import Any

from ..output.units import si
from ..tools.packets import PacketCounter, Snapshot
from ._runner import PollingView
from .options import unseen


class PacketsView(PollingView[PacketCounter]):
    columns = ("protocol", "packets/s", "bits/s", "packets", "bytes")

    def begin(self) -> None:
        self.first = self.previous = self.now = self.tool.snapshot()

    def update(self) -> None:
        self.previous, self.now = self.now, self.tool.snapshot()

    def record(self) -> dict[str, Any]:
        return self.tool.as_dict(self.now - self.first, self.now - self.previous)

    def line(self) -> str:
        total, delta = (self.now - self.first).total, self.now - self.previous
        rate = delta.total.packets / (delta.time or 1.0)
        return f"{self.tool.iface}: {total.packets} packets, {total.bytes} bytes, {rate:.0f} pkt/s"

    def title(self) -> str:
        return f"bpfscope packets on {self.tool.iface} (XDP {self.tool.mode.value}) — Ctrl-C to stop"

    def rows(self) -> list[list[Any]]:
        return _rows(self.now - self.first, self.now - self.previous)

    def final(self) -> dict[str, Any]:
        self.update()
        return self.tool.as_dict(self.now - self.first)

    def summary(self, final: dict[str, Any]) -> str:
        return f"Total packet count: {final['total']['packets']}, {unseen(final)}"

    def text_summary(self, final: dict[str, Any]) -> str:
        lines = [self.summary(final)]
        for heading, table in (("by protocol", "l3"), ("IPv4 and IPv6 by transport", "l4")):
            lines.append(f"  {heading}:")
            for name, count in final[table].items():
                lines.append(f"    {name:<6} {count['packets']:>12,} packets {count['bytes']:>15,} bytes")
        return "\n".join(lines)


def _rows(since_start: Snapshot, delta: Snapshot) -> list[list[Any]]:
    seconds = delta.time or 1.0
    rows: list[list[Any]] = []
    for layer, counts, deltas in (("", since_start.l3, delta.l3), ("  ", since_start.l4, delta.l4)):
        for name, count in counts.items():
            d = deltas[name]
            rows.append([layer + name, si(d.packets / seconds, "/s"), si(d.bytes * 8 / seconds, "bit/s"),
                         f"{count.packets:,}", si(count.bytes, "B")])
    return rows


def view(counter: PacketCounter, args: argparse.Namespace) -> PacketsView:
    return PacketsView(counter, args)
