"""`bpfscope flows`: per-flow packets, bytes and TCP flags in and out of one interface, from tc; a live
top N until Ctrl-C or --duration."""

from __future__ import annotations

import argparse
import errno
import sys
import time
from typing import Optional

from ..errors import BpfscopeError
from ..netdev import default_route_interface, interfaces
from ..output.jsonlines import emit
from ..output.units import si
from ..program import TcMode
from ..tools._base import positive_float
from ..tools.flows import DEFAULT_MAX_FLOWS, Flow, FlowSnapshot, FlowTracker, SortKey, flag_names
from .options import note_tc_fallback, remove_stale_filters, stop_on_sigterm, ticks

# An LRU map preallocates every entry on every CPU at load: keep a typo from taking the machine's memory.
MAX_FLOWS_LIMIT = 1 << 24


def bounded_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 < value <= MAX_FLOWS_LIMIT:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 1 and {MAX_FLOWS_LIMIT:,}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--iface", help="interface to watch (default: the interface of the default route)")
    parser.add_argument("--mode", choices=[m.value for m in TcMode], default=TcMode.AUTO.value,
                        help="tc attachment: auto uses a tcx link where the kernel has one, else clsact")
    parser.add_argument("--max-flows", type=bounded_count, default=DEFAULT_MAX_FLOWS, metavar="N",
                        help=f"size of the LRU flow map; the least recently seen flow makes room "
                             f"(default: {DEFAULT_MAX_FLOWS:,})")
    parser.add_argument("--sort", choices=[k.value for k in SortKey], default=SortKey.BYTES.value,
                        help="rank flows by bytes or packets since first seen, or by bytes/s (default: bytes)")
    parser.add_argument("--top", type=bounded_count, default=20, metavar="N",
                        help="flows shown per interval (default: 20)")
    parser.add_argument("--idle", type=positive_float, metavar="S",
                        help="forget flows not seen for S seconds (default: keep until the LRU evicts them)")
    parser.add_argument("--interval", type=positive_float, default=1.0, metavar="S",
                        help="seconds between updates (default: 1)")
    parser.add_argument("--duration", type=positive_float, metavar="S", help="stop after S seconds")
    parser.add_argument("--json", action="store_true", help="one JSON object per interval, and a final one")


def run(args: argparse.Namespace) -> int:
    iface = args.iface or default_route_interface()
    if not iface:
        raise BpfscopeError(errno.ENODEV, f"no default route; give --iface (interfaces: {', '.join(interfaces())})")
    sort = SortKey(args.sort)
    remove_stale_filters("flows")
    start = time.monotonic()
    with stop_on_sigterm(), FlowTracker(iface, max_flows=args.max_flows, mode=TcMode(args.mode)) as tracker:
        note_tc_fallback("flows", TcMode(args.mode), tracker.mode, iface)
        tracker.snapshot()  # the baseline of the first interval's rates
        view = _View(tracker, sort, args.top, args.idle)
        try:
            if args.json:
                view.stream_json(args.interval, args.duration)
            else:
                view.show_live(args.interval, args.duration)
        except KeyboardInterrupt:
            pass
        final = tracker.snapshot(expire_idle=args.idle)
    view.print_final(final, time.monotonic() - start, as_json=args.json)
    return 0


class _View:
    def __init__(self, tracker: FlowTracker, sort: SortKey, top: int, idle: Optional[float]) -> None:
        self.tracker = tracker
        self.sort = sort
        self.top = top
        self.idle = idle

    def header(self, snap: FlowSnapshot) -> dict[str, object]:
        return {"iface": self.tracker.iface, "mode": self.tracker.mode.value, "flows": len(snap),
                "max_flows": self.tracker.max_flows, "sort": self.sort.value}

    def stream_json(self, interval: float, duration: Optional[float]) -> None:
        for _ in ticks(interval, duration):
            snap = self.tracker.snapshot(expire_idle=self.idle)
            emit({"time": round(time.time(), 3), **self.header(snap), "expired": snap.expired,
                  "top": [f.as_dict() for f in snap.top(self.top, self.sort)]})

    def show_live(self, interval: float, duration: Optional[float]) -> None:
        iface = self.tracker.iface
        if not sys.stdout.isatty():
            for _ in ticks(interval, duration):
                snap = self.tracker.snapshot(expire_idle=self.idle)
                packets = snap.total("packets_in") + snap.total("packets_out")
                octets = snap.total("bytes_in") + snap.total("bytes_out")
                rate = float(snap.stats["rate"].sum())
                print(f"{iface}: {len(snap)} flows, {packets} packets, {octets} bytes, {rate:.0f} B/s", flush=True)
            return
        from ..output.live import LiveTable

        columns = ["flow", "rate", "packets in", "bytes in", "packets out", "bytes out", "tcp flags in/out", "idle"]
        with LiveTable(self._title(0), columns) as live:
            for _ in ticks(interval, duration):
                snap = self.tracker.snapshot(expire_idle=self.idle)
                live.update(self._rows(snap), title=self._title(len(snap)))

    def _title(self, count: int) -> str:
        t = self.tracker
        return (f"bpfscope flows on {t.iface} (tc {t.mode.value}) — {count:,} of {t.max_flows:,} flows, "
                f"top {self.top} by {self.sort.value} — Ctrl-C to stop")

    def _rows(self, snap: FlowSnapshot) -> list[list[str]]:
        now = time.time()
        return [[f.endpoints(), si(f.rate * 8, "bit/s"), f"{f.packets_in:,}", si(f.bytes_in, "B"),
                 f"{f.packets_out:,}", si(f.bytes_out, "B"), _flags(f), f"{max(0.0, now - f.last_seen):.1f}s"]
                for f in snap.top(self.top, self.sort)]

    def print_final(self, final: FlowSnapshot, seconds: float, *, as_json: bool) -> None:
        summary = f"Total flow count: {len(final)}"
        top = final.top(self.top, self.sort)
        if as_json:
            emit({"time": round(time.time(), 3), "final": True, "seconds": round(seconds, 3),
                  **self.header(final), "top": [f.as_dict() for f in top]})
            print(summary, file=sys.stderr)
            return
        print(summary)
        if top:
            print(f"  top {len(top)} by {self.sort.value} (in / out):")
        for f in top:
            print(f"    {f.endpoints():<52} {f.packets_in:>10,} / {f.packets_out:<10,} packets "
                  f"{f.bytes_in:>13,} / {f.bytes_out:<13,} bytes  {_flags(f)}")


def _flags(flow: Flow) -> str:
    if flow.proto != "tcp":
        return ""
    return f"{flag_names(flow.tcp_flags_in) or '-'} / {flag_names(flow.tcp_flags_out) or '-'}"
