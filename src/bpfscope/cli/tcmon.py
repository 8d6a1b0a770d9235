"""`bpfscope tcmon`: port scans, SYN floods, denied networks and ports, and payload patterns on one
interface, from tc; events as they come until Ctrl-C or --duration. SIGHUP re-reads the rules file."""

from __future__ import annotations

import argparse
import errno
import sys
import time
from collections import Counter, deque
from typing import Any, Callable, Iterator, Optional

from ..errors import BpfscopeError
from ..netdev import default_route_interface, interfaces
from ..output.jsonlines import emit
from ..program import TcMode
from ..tools._base import positive_float, ring_bytes
from ..tools.tcmon import DEFAULT_RING_BYTES, DEFAULT_RULES, Event, Monitor, RulesError, Thresholds, load_rules
from .options import StopFlag, note_tc_fallback, remove_stale_filters, stop_flag, stop_on_sigterm, ticks

SHOWN_EVENTS = 20  # rows of the live view: the newest events, scrolling up
_DEFAULTS = Thresholds()


def port_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 1023:  # the kernel's bitmap has 1024 bits: one more must still fit
        raise argparse.ArgumentTypeError(f"{text!r} must be from 1 to 1023")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--iface", help="interface to watch (default: the interface of the default route)")
    parser.add_argument("--mode", choices=[m.value for m in TcMode], default=TcMode.AUTO.value,
                        help="tc attachment: auto uses a tcx link where the kernel has one, else clsact")
    parser.add_argument("--rules", metavar="FILE", default=str(DEFAULT_RULES),
                        help="YAML rules: denied networks and ports, payload patterns; SIGHUP re-reads it "
                             "(default: the tcmon.yaml shipped with bpfscope)")
    parser.add_argument("--scan-ports", type=port_count, default=_DEFAULTS.scan_ports, metavar="N",
                        help=f"a source trying more than N distinct ports within the window is a port scan "
                             f"(default: {_DEFAULTS.scan_ports})")
    parser.add_argument("--window", type=positive_float, default=_DEFAULTS.window, metavar="S",
                        help=f"seconds over which ports and SYNs are counted (default: {_DEFAULTS.window:g})")
    parser.add_argument("--syn-rate", type=positive_float, default=_DEFAULTS.syn_rate, metavar="PER_S",
                        help=f"SYNs per second to one destination without a completed handshake, over the "
                             f"window, that make a SYN flood (default: {_DEFAULTS.syn_rate:g})")
    parser.add_argument("--event-interval", type=positive_float, default=_DEFAULTS.event_interval, metavar="S",
                        help=f"at most one deny or pattern event per source, destination and rule every S "
                             f"seconds; the rest are counted as suppressed (default: {_DEFAULTS.event_interval:g})")
    parser.add_argument("--interval", type=positive_float, default=0.5, metavar="S",
                        help="seconds between refreshes of the live view (default: 0.5)")
    parser.add_argument("--duration", type=positive_float, metavar="S", help="stop after S seconds")
    parser.add_argument("--json", action="store_true", help="one JSON object per event, and a final summary")
    # The ring's size, for tests that need it to overflow.
    parser.add_argument("--ring-bytes", type=ring_bytes, default=DEFAULT_RING_BYTES, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    iface = args.iface or default_route_interface()
    if not iface:
        raise BpfscopeError(errno.ENODEV, f"no default route; give --iface (interfaces: {', '.join(interfaces())})")
    rules = load_rules(args.rules)  # every error in the file stops here, before anything is loaded
    thresholds = Thresholds(scan_ports=args.scan_ports, window=args.window, syn_rate=args.syn_rate,
                            event_interval=args.event_interval)
    remove_stale_filters("tcmon")
    start = time.monotonic()
    with stop_on_sigterm(), Monitor(iface, rules=rules, thresholds=thresholds, mode=TcMode(args.mode),
                                    ring_bytes=args.ring_bytes) as monitor:
        note_tc_fallback("tcmon", TcMode(args.mode), monitor.mode, iface)
        live = not args.json and sys.stdout.isatty()
        if not live:  # the live view's title says it
            print(f"bpfscope tcmon on {iface} (tc {monitor.mode.value}): {rules.summary()} from {args.rules} "
                  f"— Ctrl-C to stop", file=sys.stderr, flush=True)
        # SIGHUP only sets a flag too: the rules are re-read between polls, never inside a handler.
        with stop_flag(hangup=True) as signals:
            view = _View(monitor, args.rules, signals, None if live else _print_json if args.json else _print_line)
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
    def __init__(self, monitor: Monitor, rules_path: str, signals: StopFlag,
                 show: Optional[Callable[[Event], None]]) -> None:
        self.monitor = monitor
        self.show = show
        self.rules_path = rules_path
        self.signals = signals
        self.seen: Counter[str] = Counter()
        self.recent: deque[Event] = deque(maxlen=SHOWN_EVENTS)
        self.reloads = 0

    def poll(self, timeout_ms: int) -> list[Event]:
        if self.signals.hangup:
            self.signals.hangup = False
            self.reload()
        events = self.monitor.poll(timeout_ms)
        self.recent.extend(events)
        if self.show is not None:
            for event in events:
                self.show(event)
        self.seen.update(e.kind for e in events)
        return events

    def reload(self) -> None:
        """Re-reads and re-validates the rules file; a bad file leaves the old rules in place."""
        try:
            rules = load_rules(self.rules_path)
        except RulesError as exc:
            print(f"bpfscope tcmon: rules not reloaded, the old ones stay: {exc}", file=sys.stderr, flush=True)
            return
        self.monitor.apply(rules)
        self.reloads += 1
        print(f"bpfscope tcmon: rules reloaded from {self.rules_path}: {rules.summary()}", file=sys.stderr,
              flush=True)

    def _polls(self, duration: Optional[float]) -> Iterator[list[Event]]:
        end = time.monotonic() + duration if duration else float("inf")
        while not self.signals.requested:
            left = end - time.monotonic()
            if left <= 0:
                return
            yield self.poll(int(min(left, 0.1) * 1000))

    def stream(self, duration: Optional[float]) -> None:
        for _ in self._polls(duration):
            pass

    def show_live(self, interval: float, duration: Optional[float]) -> None:
        from ..output.live import LiveTable

        columns = ["time", "kind", "dir", "flow", "detail"]
        with LiveTable(self._title(), columns) as live:
            for _ in ticks(interval, duration):
                if self.signals.requested:
                    return
                while self.poll(0):
                    pass
                rows = [[time.strftime("%H:%M:%S", time.localtime(e.time)), e.kind, e.direction[:3],
                         e.endpoints(), e.detail] for e in self.recent]
                live.update(rows, title=self._title())

    def _title(self) -> str:
        m = self.monitor
        counts = m.counts()
        kinds = ", ".join(f"{kind} {counts.events.get(kind, 0):,}" for kind in counts.events)
        return (f"bpfscope tcmon on {m.iface} (tc {m.mode.value}) — {sum(self.seen.values()):,} events "
                f"({kinds}), {counts.suppressed:,} suppressed, {counts.lost:,} lost — Ctrl-C to stop")

    def drain(self) -> None:
        while self.poll(0):
            pass

    def summary(self, seconds: float) -> dict[str, Any]:
        counts = self.monitor.counts()
        return {"time": round(time.time(), 3), "final": True, "seconds": round(seconds, 3),
                "iface": self.monitor.iface, "mode": self.monitor.mode.value, "rules": self.rules_path,
                "reloads": self.reloads, "packets": counts.packets,
                "events": {kind: self.seen.get(kind, 0) for kind in counts.events},
                "suppressed": counts.suppressed, "lost": counts.lost}


def _print_json(event: Event) -> None:
    emit(event.as_dict())


def _print_line(event: Event) -> None:
    stamp = time.strftime("%H:%M:%S", time.localtime(event.time))
    print(f"{stamp} {event.kind:<14} {event.direction:<7} {event.endpoints():<48} {event.detail}", flush=True)


def _summary_line(summary: dict[str, Any]) -> str:
    events = summary["events"]
    kinds = ", ".join(f"{kind} {n:,}" for kind, n in events.items())
    return (f"tcmon on {summary['iface']} (tc {summary['mode']}): {sum(events.values()):,} events ({kinds}), "
            f"{summary['suppressed']:,} suppressed, {summary['lost']:,} lost, {summary['packets']:,} packets "
            f"in {summary['seconds']:.1f} s")
