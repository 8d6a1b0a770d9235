"""`bpfscope guard`'s view: verdicts per second and the sources that lost the most, a live table on a
terminal, one line per interval otherwise; and the totals and top offenders at the end. The actions
that change a running guard (`bpfscope guard allow|deny|unlist|set`) are the tool's (Guard.act)."""

from __future__ import annotations

import argparse
from typing import Any, Optional

from ..output.units import si
from ..tools.guard import Guard, Snapshot, top_offenders
from ._runner import PollingView
from .options import unseen

TOP = 10


class GuardView(PollingView[Guard]):
    def __init__(self, guard: Guard, args: argparse.Namespace) -> None:
        super().__init__(guard, args)
        self.dropped = "would drop" if guard.dry_run else "dropped"
        self.columns = ("source", "passed/s", f"{self.dropped}/s", "passed", self.dropped)

    def begin(self) -> None:
        self.first = self.previous = self.now = self.tool.snapshot()

    def update(self) -> None:
        self.previous, self.now = self.now, self.tool.snapshot()

    def record(self) -> dict[str, Any]:
        return self._as_dict(self.previous)

    def _as_dict(self, previous: Optional[Snapshot] = None) -> dict[str, Any]:
        """Totals since the start and, given the previous interval's snapshot, rates since it."""
        guard, limit, now = self.tool, self.tool.limit, self.now
        out: dict[str, Any] = {"iface": guard.iface, "mode": guard.mode.value, "dry_run": guard.dry_run,
                               "rate": limit.rate, "burst": limit.burst, "total": vars(now.counts - self.first.counts)}
        if previous is not None:
            delta = now.counts - previous.counts
            seconds = (now.time - previous.time) or 1.0
            out["pps"] = {name: round(value / seconds, 1) for name, value in vars(delta).items()}
        out["top"] = [vars(o) | {"passed_per_s": round(o.passed_per_s, 1), "dropped_per_s": round(o.dropped_per_s, 1)}
                      for o in top_offenders(now, previous or self.first, TOP)]
        return out

    def line(self) -> str:
        delta, seconds = self.now.counts - self.previous.counts, (self.now.time - self.previous.time) or 1.0
        lost = delta.would_drop if self.tool.dry_run else delta.dropped
        top = ", ".join(f"{o.source} {o.dropped_per_s:.0f}/s" for o in top_offenders(self.now, self.previous, 3))
        return (f"{self.tool.iface}: passed {delta.passed / seconds:.0f}/s, {self.dropped} {lost / seconds:.0f}/s"
                + (f"; top: {top}" if top else ""))

    def banner(self) -> str:
        return self.title()

    def title(self) -> str:
        guard, limit = self.tool, self.tool.limit
        dry = " DRY RUN," if guard.dry_run else ""
        return (f"bpfscope guard on {guard.iface} (XDP {guard.mode.value}):{dry} {limit.rate:,} packets/s per source, "
                f"burst {limit.burst:,} — Ctrl-C to stop")

    def rows(self) -> list[list[Any]]:
        now, previous = self.now, self.previous
        total, delta = now.counts - self.first.counts, now.counts - previous.counts
        seconds = (now.time - previous.time) or 1.0
        dropped = "would_drop" if self.tool.dry_run else "dropped"

        def per_s(value: float) -> str:
            return si(value / seconds, "/s")

        rows = [
            ["all sources", per_s(delta.passed), per_s(getattr(delta, dropped)), f"{total.passed:,}",
             f"{getattr(total, dropped):,}"],
            ["  allow list", per_s(delta.allowed), "", f"{total.allowed:,}", ""],
            ["  deny list", "", per_s(delta.denied), "", f"{total.denied:,}"],
        ]
        for o in top_offenders(now, previous, TOP):
            rows.append([o.source, si(o.passed_per_s, "/s"), si(o.dropped_per_s, "/s"), f"{o.passed:,}",
                         f"{o.dropped:,}"])
        return rows

    def final(self) -> dict[str, Any]:
        self.update()
        return self._as_dict()

    def summary(self, final: dict[str, Any]) -> str:
        total = final["total"]
        lost = (f"{total['would_drop']:,} would have been dropped" if final["dry_run"]
                else f"{total['dropped']:,} dropped")
        return (f"guard on {final['iface']} (XDP {final['mode']}): {total['passed']:,} passed, {lost} "
                f"({total['denied']:,} denied, {total['allowed']:,} allowed), {unseen(final)} in "
                f"{final['seconds']:.1f} s")

    def text_summary(self, final: dict[str, Any]) -> str:
        lines = [self.summary(final)]
        if final["top"]:
            lines.append("  top offenders:")
        for o in final["top"]:
            lines.append(f"    {o['source']:<24} {o['passed']:>12,} passed {o['dropped']:>12,} {self.dropped}")
        return "\n".join(lines)


def view(guard: Guard, args: argparse.Namespace) -> GuardView:
    return GuardView(guard, args)
