"""`bpfscope tcmon`'s view: each event as it comes (a line, or a JSON object), a live table of the newest
on a terminal, and the events by kind at the end. SIGHUP re-reads the rules file."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from typing import Any

from ..tools.tcmon import Event, Monitor, RulesError, load_rules
from ._runner import StreamingView
from .options import unseen


def _clock(event: Event) -> str:
    return time.strftime("%H:%M:%S", time.localtime(event.time))


class TcmonView(StreamingView[Monitor]):
    columns = ("time", "kind", "dir", "flow", "detail")
    catches_hangup = True

    def __init__(self, monitor: Monitor, args: argparse.Namespace) -> None:
        super().__init__(monitor, args)
        self.seen: Counter[str] = Counter()
        self.reloads = 0

    def banner(self) -> str:
        m = self.tool
        return (f"bpfscope tcmon on {m.iface} (tc {m.mode.value}): {m.rules.summary()} from {m.rules.path} "
                "— Ctrl-C to stop")

    def hangup(self) -> None:
        """Re-reads and re-validates the rules file; a bad file leaves the old rules in place."""
        path = self.tool.rules.path
        try:
            rules = load_rules(path)
        except RulesError as exc:
            print(f"bpfscope tcmon: rules not reloaded, the old ones stay: {exc}", file=sys.stderr, flush=True)
            return
        self.tool.apply(rules)
        self.reloads += 1
        print(f"bpfscope tcmon: rules reloaded from {path}: {rules.summary()}", file=sys.stderr, flush=True)

    def take(self, batch: list[Event]) -> None:
        super().take(batch)
        self.seen.update(event.kind for event in batch)

    def text_lines(self, batch: list[Event]) -> bytes:
        return "".join(f"{_clock(e)} {e.kind:<14} {e.direction:<7} {e.endpoints():<48} {e.detail}\n"
                       for e in batch).encode()

    def title(self) -> str:
        m, counts = self.tool, self.tool.counts()
        kinds = ", ".join(f"{kind} {counts.events.get(kind, 0):,}" for kind in counts.events)
        return (f"bpfscope tcmon on {m.iface} (tc {m.mode.value}) — {sum(self.seen.values()):,} events "
                f"({kinds}), {counts.suppressed:,} suppressed, {counts.lost:,} lost — Ctrl-C to stop")

    def rows(self) -> list[list[Any]]:
        return [[_clock(e), e.kind, e.direction[:3], e.endpoints(), e.detail] for e in self.recent]

    def final(self) -> dict[str, Any]:
        m, counts = self.tool, self.tool.counts()
        return {"iface": m.iface, "mode": m.mode.value, "rules": m.rules.path, "reloads": self.reloads,
                "packets": counts.packets, "events": {kind: self.seen.get(kind, 0) for kind in counts.events},
                "suppressed": counts.suppressed}

    def summary(self, final: dict[str, Any]) -> str:
        events = final["events"]
        kinds = ", ".join(f"{kind} {n:,}" for kind, n in events.items())
        return (f"tcmon on {final['iface']} (tc {final['mode']}): {sum(events.values()):,} events ({kinds}), "
                f"{final['suppressed']:,} suppressed, {unseen(final)}, {final['packets']:,} packets "
                f"in {final['seconds']:.1f} s")


def view(monitor: Monitor, args: argparse.Namespace) -> TcmonView:
    return TcmonView(monitor, args)
