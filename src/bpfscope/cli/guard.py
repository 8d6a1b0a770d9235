"""`bpfscope guard`: a per-source XDP rate limit, live until Ctrl-C or --duration; and
`bpfscope guard allow|deny|unlist|set`, which change the running guard from another shell."""

from __future__ import annotations

import argparse
import errno
import ipaddress
import sys
import time
from typing import Any, Optional

from ..errors import BpfscopeError
from ..output.jsonlines import emit
from ..output.units import si
from ..pin import tool_pin_dir
from ..program import XdpMode
from ..tools._base import positive_float
from ..tools.cidr import Network
from ..tools.guard import MAX_RATE, Guard, Limit, RunningGuard, Snapshot, top_offenders
from .options import stop_on_sigterm, ticks

TOP = 10
# Options of a run, and their defaults: given with a control action they would be ignored.
_RUN_OPTIONS = {"iface": None, "dry_run": False, "mode": XdpMode.AUTO.value, "interval": 1.0,
                "duration": None, "json": False}


def rate(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_RATE:
        raise argparse.ArgumentTypeError(f"{text!r} must be from 1 to {MAX_RATE:,}")
    return value


def cidr(text: str) -> Network:
    try:
        return ipaddress.ip_network(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a CIDR ({exc})") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--iface", help="interface to guard (required to run one)")
    parser.add_argument("--rate", type=rate, metavar="PPS",
                        help="packets per second each source (IPv4 /32, IPv6 /64) may send")
    parser.add_argument("--burst", type=rate, metavar="N",
                        help="packets a quiet source may send back to back (default: the rate)")
    parser.add_argument("--dry-run", action="store_true", help="count what would be dropped, drop nothing")
    parser.add_argument("--mode", choices=[m.value for m in XdpMode], default=XdpMode.AUTO.value,
                        help="XDP mode: auto tries native, then generic (default: auto)")
    parser.add_argument("--interval", type=positive_float, default=1.0, metavar="S",
                        help="seconds between updates (default: 1)")
    parser.add_argument("--duration", type=positive_float, metavar="S", help="stop after S seconds")
    parser.add_argument("--json", action="store_true", help="one JSON object per interval, and a final one")
    parser.add_argument("--pin-dir", metavar="DIR", help=f"where the guard's maps are pinned (default: "
                        f"{tool_pin_dir('guard')}; the agent's guard: its pin_dir/guard)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION",
                                    title="change the running guard (from another shell)")
    for name, text in (("allow", "let CIDR through unlimited"), ("deny", "drop everything from CIDR"),
                       ("unlist", "take CIDR off the allow and deny lists")):
        action = actions.add_parser(name, help=text, description=f"{text} (the deny list wins over the allow list)")
        action.add_argument("cidr", type=cidr, metavar="CIDR",
                            help="an address or network: 192.0.2.0/24, 2001:db8::/48")
    limit = actions.add_parser("set", help="change the rate and burst", description="change the rate and burst")
    limit.add_argument("--rate", type=rate, metavar="PPS", help="packets per second per source")
    limit.add_argument("--burst", type=rate, metavar="N", help="packets back to back")


def run(args: argparse.Namespace) -> int:
    if args.action:
        run_options = _RUN_OPTIONS if args.action == "set" else {**_RUN_OPTIONS, "rate": None, "burst": None}
        mixed = [name for name, default in run_options.items() if getattr(args, name) != default]
        if mixed:
            option = "--" + mixed[0].replace("_", "-")
            raise BpfscopeError(errno.EINVAL, f"{option} is for running a guard, not for `guard {args.action}`")
        return _control(args)
    if not args.iface:
        raise BpfscopeError(errno.EINVAL, "give --iface: the interface to guard")
    if args.rate is None:
        raise BpfscopeError(errno.EINVAL, "give --rate: packets per second per source")
    limit = Limit(args.rate, args.burst or args.rate)
    with stop_on_sigterm(), Guard(args.iface, limit=limit, dry_run=args.dry_run, mode=XdpMode(args.mode),
                                  pin_dir=args.pin_dir) as guard:
        first = guard.snapshot()
        try:
            if args.json:
                _stream_json(guard, first, args.interval, args.duration)
            else:
                _show_live(guard, first, args.interval, args.duration)
        except KeyboardInterrupt:
            pass
        final = guard.snapshot()
        final_limit = guard.limit
    _print_final(guard, first, final, final_limit, as_json=args.json)
    return 0


def _control(args: argparse.Namespace) -> int:
    with RunningGuard(args.pin_dir) as guard:
        if args.action == "set":
            if args.rate is None and args.burst is None:
                raise BpfscopeError(errno.EINVAL, "give --rate, --burst or both")
            before = guard.limit
            after = guard.set_limit(rate=args.rate, burst=args.burst)
            print(f"guard: rate {after.rate:,}/s, burst {after.burst:,} (was {before.rate:,}/s, {before.burst:,})")
        elif args.action == "unlist":
            lists = guard.unlist(args.cidr)
            if not lists:
                raise BpfscopeError(errno.ENOENT, f"{args.cidr} is on neither list")
            print(f"guard: {args.cidr} off the {' and '.join(lists)} list")
        else:
            guard.add(args.action, args.cidr)
            print(f"guard: {args.cidr} on the {args.action} list")
    return 0


def _as_dict(guard: Guard, limit: Limit, now: Snapshot, since: Snapshot,
             previous: Optional[Snapshot] = None) -> dict[str, Any]:
    total = now.counts - since.counts
    out: dict[str, Any] = {"iface": guard.iface, "mode": guard.mode.value, "dry_run": guard.dry_run,
                           "rate": limit.rate, "burst": limit.burst, "total": vars(total)}
    if previous is not None:
        delta = now.counts - previous.counts
        seconds = (now.time - previous.time) or 1.0
        out["pps"] = {name: round(value / seconds, 1) for name, value in vars(delta).items()}
    out["top"] = [vars(o) | {"passed_per_s": round(o.passed_per_s, 1), "dropped_per_s": round(o.dropped_per_s, 1)}
                  for o in top_offenders(now, previous or since, TOP)]
    return out


def _stream_json(guard: Guard, first: Snapshot, interval: float, duration: Optional[float]) -> None:
    previous = first
    for _ in ticks(interval, duration):
        now = guard.snapshot()
        emit({"time": round(time.time(), 3), **_as_dict(guard, guard.limit, now, first, previous)})
        previous = now


def _rows(guard: Guard, now: Snapshot, first: Snapshot, previous: Snapshot) -> list[list[str]]:
    total, delta = now.counts - first.counts, now.counts - previous.counts
    seconds = (now.time - previous.time) or 1.0
    dropped = "would_drop" if guard.dry_run else "dropped"

    def per_s(value: float) -> str:
        return si(value / seconds, "/s")

    rows = [
        ["all sources", per_s(delta.passed), per_s(getattr(delta, dropped)), f"{total.passed:,}",
         f"{getattr(total, dropped):,}"],
        ["  allow list", per_s(delta.allowed), "", f"{total.allowed:,}", ""],
        ["  deny list", "", per_s(delta.denied), "", f"{total.denied:,}"],
    ]
    for o in top_offenders(now, previous, TOP):
        rows.append([o.source, si(o.passed_per_s, "/s"), si(o.dropped_per_s, "/s"), f"{o.passed:,}", f"{o.dropped:,}"])
    return rows


def _title(guard: Guard) -> str:
    limit = guard.limit
    dry = " DRY RUN," if guard.dry_run else ""
    return (f"bpfscope guard on {guard.iface} (XDP {guard.mode.value}):{dry} {limit.rate:,} packets/s per source, "
            f"burst {limit.burst:,} — Ctrl-C to stop")


def _show_live(guard: Guard, first: Snapshot, interval: float, duration: Optional[float]) -> None:
    dropped = "would drop" if guard.dry_run else "dropped"
    if not sys.stdout.isatty():
        print(_title(guard), flush=True)
        previous = first
        for _ in ticks(interval, duration):
            now = guard.snapshot()
            delta, seconds = now.counts - previous.counts, (now.time - previous.time) or 1.0
            lost = delta.would_drop if guard.dry_run else delta.dropped
            top = ", ".join(f"{o.source} {o.dropped_per_s:.0f}/s" for o in top_offenders(now, previous, 3))
            print(f"{guard.iface}: passed {delta.passed / seconds:.0f}/s, {dropped} {lost / seconds:.0f}/s"
                  + (f"; top: {top}" if top else ""), flush=True)
            previous = now
        return
    from ..output.live import LiveTable

    columns = ["source", "passed/s", f"{dropped}/s", "passed", dropped]
    with LiveTable(_title(guard), columns) as live:
        previous = first
        live.update(_rows(guard, first, first, first))
        for _ in ticks(interval, duration):
            now = guard.snapshot()
            live.update(_rows(guard, now, first, previous), title=_title(guard))
            previous = now


def _print_final(guard: Guard, first: Snapshot, final: Snapshot, limit: Limit, *, as_json: bool) -> None:
    total = final.counts - first.counts
    lost = f"{total.would_drop:,} would have been dropped" if guard.dry_run else f"{total.dropped:,} dropped"
    summary = (f"guard on {guard.iface} (XDP {guard.mode.value}): {total.passed:,} passed, {lost} "
               f"({total.denied:,} denied, {total.allowed:,} allowed) in {final.time - first.time:.1f} s")
    offenders = top_offenders(final, first, TOP)
    dropped = "would drop" if guard.dry_run else "dropped"
    if as_json:
        emit({"time": round(time.time(), 3), "final": True, "seconds": round(final.time - first.time, 3),
              **_as_dict(guard, limit, final, first)})
        print(summary, file=sys.stderr)
        return
    print(summary)
    if offenders:
        print("  top offenders:")
        for o in offenders:
            print(f"    {o.source:<24} {o.passed:>12,} passed {o.dropped:>12,} {dropped}")
