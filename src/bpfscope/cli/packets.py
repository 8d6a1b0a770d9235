"""`bpfscope packets`: packets and bytes by protocol on one interface, live, until Ctrl-C or --duration."""

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
from ..program import XdpMode
from ..tools._base import positive_float
from ..tools.packets import PacketCounter, Snapshot
from .options import stop_on_sigterm, ticks


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--iface", help="interface to watch (default: the interface of the default route)")
    parser.add_argument("--mode", choices=[m.value for m in XdpMode], default=XdpMode.AUTO.value,
                        help="XDP mode: auto tries native, then generic (default: auto)")
    parser.add_argument("--interval", type=positive_float, default=1.0, metavar="S",
                        help="seconds between updates (default: 1)")
    parser.add_argument("--duration", type=positive_float, metavar="S", help="stop after S seconds")
    parser.add_argument("--json", action="store_true", help="one JSON object per interval, and a final one")


def run(args: argparse.Namespace) -> int:
    iface = args.iface or default_route_interface()
    if not iface:
        raise BpfscopeError(errno.ENODEV, f"no default route; give --iface (interfaces: {', '.join(interfaces())})")
    with stop_on_sigterm(), PacketCounter(iface, mode=XdpMode(args.mode)) as counter:
        first = counter.snapshot()
        try:
            if args.json:
                _stream_json(counter, first, args.interval, args.duration)
            else:
                _show_live(counter, first, args.interval, args.duration)
        except KeyboardInterrupt:
            pass
        final = counter.snapshot() - first
    _print_final(counter, final, as_json=args.json)
    return 0


def _stream_json(counter: PacketCounter, first: Snapshot, interval: float, duration: Optional[float]) -> None:
    previous = first
    for _ in ticks(interval, duration):
        now = counter.snapshot()
        emit({"time": round(time.time(), 3), **counter.as_dict(now - first, now - previous)})
        previous = now


def _rows(since_start: Snapshot, delta: Snapshot) -> list[list[str]]:
    seconds = delta.time or 1.0
    rows = []
    for layer, counts, deltas in (("", since_start.l3, delta.l3), ("  ", since_start.l4, delta.l4)):
        for name, count in counts.items():
            d = deltas[name]
            rows.append([layer + name, si(d.packets / seconds, "/s"), si(d.bytes * 8 / seconds, "bit/s"),
                         f"{count.packets:,}", si(count.bytes, "B")])
    return rows


def _show_live(counter: PacketCounter, first: Snapshot, interval: float, duration: Optional[float]) -> None:
    title = f"bpfscope packets on {counter.iface} (XDP {counter.mode.value}) — Ctrl-C to stop"
    if not sys.stdout.isatty():
        previous = first
        for _ in ticks(interval, duration):
            now = counter.snapshot()
            total = (now - first).total
            rate = (now - previous).total.packets / ((now - previous).time or 1.0)
            print(f"{counter.iface}: {total.packets} packets, {total.bytes} bytes, {rate:.0f} pkt/s", flush=True)
            previous = now
        return
    from ..output.live import LiveTable

    columns = ["protocol", "packets/s", "bits/s", "packets", "bytes"]
    with LiveTable(title, columns) as live:
        previous = first
        live.update(_rows(first - first, first - first))
        for _ in ticks(interval, duration):
            now = counter.snapshot()
            live.update(_rows(now - first, now - previous))
            previous = now


def _print_final(counter: PacketCounter, final: Snapshot, *, as_json: bool) -> None:
    summary = f"Total packet count: {final.total.packets}"
    if as_json:
        emit({"time": round(time.time(), 3), "final": True, "seconds": round(final.time, 3),
              **counter.as_dict(final)})
        print(summary, file=sys.stderr)
        return
    print(summary)
    for heading, counts in (("by protocol", final.l3), ("IPv4 and IPv6 by transport", final.l4)):
        print(f"  {heading}:")
        for name, count in counts.items():
            print(f"    {name:<6} {count.packets:>12,} packets {count.bytes:>15,} bytes")
