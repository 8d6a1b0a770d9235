"""`bpfscope inspect`: what the kernel has loaded (programs, maps, a map's entries, links, pins, network
attachments) and the verifier's verdict on an object file. Each view is a table for people, or with
--json one JSON object per line for scripts."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any, Optional, Sequence

from .. import inspect as ins
from ..mounts import BPFFS
from ..output.jsonlines import emit
from ..output.units import count_of, si

__all__ = ["add_arguments", "run"]

_PIPE_WIDTH = 1000  # piped, a row stays on one line, for grep
_TAIL = 20  # lines of a rejected program's log shown without --log


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def _object_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an id") from None
    if not 0 < value < 1 << 32:
        raise argparse.ArgumentTypeError(f"{text!r} is not an id (1 to {(1 << 32) - 1})")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    views = parser.add_subparsers(dest="view", metavar="VIEW", required=True)

    def view(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = views.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--json", action="store_true", help="one JSON object per line")
        return sub

    for name, noun, extra in (("progs", "program", "where each is attached, runs and run time (with bpf_stats), "
                                                    "memory, which processes hold it"),
                              ("maps", "map", "key and value types from BTF, entries, memory, holders"),
                              ("links", "link", "each one's program and where it attaches")):
        sub = view(name, f"loaded {noun}s: {extra}")
        sub.add_argument("ids", nargs="*", type=_object_id, metavar="ID", help=f"only the {noun}s with these ids")
    sub = view("map", "one map's entries, keys and values typed by its BTF, read in batches")
    sub.add_argument("ref", metavar="ID|PIN", help="the map's id, or the path it is pinned at")
    sub.add_argument("--limit", type=_positive, metavar="N", help="show at most N entries")
    sub = view("pins", "the pins under a bpffs directory and what each one keeps alive")
    sub.add_argument("root", nargs="?", default=BPFFS, metavar="DIR", help=f"where to look (default: {BPFFS})")
    sub = view("net", "XDP, tcx and clsact attachments of each interface in this network namespace")
    sub.add_argument("iface", nargs="?", metavar="IFACE", help="only this interface")
    sub = view("verify", "load an object without attaching it: the verifier's verdict (exit 1 when rejected)")
    sub.add_argument("path", metavar="FILE.bpf.o", help="a compiled BPF object")
    sub.add_argument("--log", action="store_true", help="the verifier's whole log, not only its tail")


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except BrokenPipeError:
        # The reader (head, grep -m) has all it wanted; nothing more may reach the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _run(args: argparse.Namespace) -> int:
    view = args.view
    if view == "progs":
        _show_programs(ins.programs(args.ids or None), args.json)
    elif view == "maps":
        _show_maps(ins.maps(args.ids or None), args.json)
    elif view == "map":
        _show_entries(args.ref, args.limit, args.json)
    elif view == "links":
        _show_links(ins.links(args.ids or None), args.json)
    elif view == "pins":
        _show_pins(ins.pins(args.root), args.root, args.json)
    elif view == "net":
        _show_net(ins.net_attachments(args.iface), args.json)
    else:
        return _show_verdict(ins.verify(args.path, log=args.log), args.json, args.log)
    return 0


# --- output ---


def _print(renderable: Any) -> None:
    """Prints a rich table or tree; piped, each row stays on one line (for grep) without trailing blanks."""
    from rich.console import Console

    # markup off: names and values such as "count_tc:[12]" are shown as they are
    console = Console(markup=False, highlight=False, width=None if sys.stdout.isatty() else _PIPE_WIDTH)
    with console.capture() as capture:
        console.print(renderable)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in capture.get().splitlines()))


def _print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], caption: str = "") -> None:
    from rich import box
    from rich.table import Table

    print(title)
    if not rows:
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    _print(table)
    if caption:
        print(caption)


def _holders(pids: Sequence[ins.Holder]) -> str:
    return ", ".join(f"{h.comm}({h.pid})" for h in pids) or "-"


def _bytes(value: Optional[int]) -> str:
    return "-" if value is None else si(value, "B")


def _show_programs(found: Sequence[ins.ProgramInfo], as_json: bool) -> None:
    if as_json:
        for p in found:
            emit(dataclasses.asdict(p))
        return
    counted = any(p.run_cnt is not None for p in found)
    rows = [[str(p.id), p.type, p.name, "\n".join(p.attached) or "-",
             f"{p.run_cnt:,}" if p.run_cnt is not None else "-",
             f"{p.run_time_ns // p.run_cnt:,} ns" if p.run_cnt and p.run_time_ns is not None else "-",
             _bytes(p.bytes_jited), _bytes(p.memlock), _holders(p.pids)] for p in found]
    caption = "" if counted else "runs: not counted; turn on with sysctl -w kernel.bpf_stats_enabled=1"
    _print_table(f"{len(found)} programs", ["id", "type", "name", "attached", "runs", "avg run", "jited",
                                            "memlock", "held by"], rows, caption)


def _show_maps(found: Sequence[ins.MapInfo], as_json: bool) -> None:
    if as_json:
        for m in found:
            emit(dataclasses.asdict(m))
        return
    rows = [[str(m.id), m.type, m.name, m.key_type or f"{m.key_size} bytes", m.value_type or f"{m.value_size} bytes",
             f"{'-' if m.entries is None else f'{m.entries:,}'} / {m.max_entries:,}", _bytes(m.memlock),
             _holders(m.pids)] for m in found]
    caption = "entries: counted for hash maps of up to 64 MiB of keys and values; '-' where not counted"
    _print_table(f"{len(found)} maps", ["id", "type", "name", "key", "value", "entries", "memlock", "held by"],
                 rows, caption)


def _compact(value: Any) -> str:
    """A key or value on one line: struct fields as name=value."""
    if isinstance(value, dict):
        return " ".join(f"{name}={_compact(item)}" for name, item in value.items())
    if isinstance(value, list):
        return "[" + ", ".join(_compact(item) for item in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


def _show_entries(ref: str, limit: Optional[int], as_json: bool) -> None:
    """Entries are printed as each batch arrives, so a big map starts showing at once: one `key → value`
    line each, rather than a table that needs every row before it can draw one."""
    with ins.open_map(ref) as m:
        if not as_json:
            print(f"map {m.name} ({ref}): {m.key.name} → {m.value.name}")
        count = 0
        for entry in ins.map_entries(m, limit=limit):
            count += 1
            if as_json:
                emit(entry)
            elif "values" in entry:
                cpus = ", ".join(f"cpu{v['cpu']}: {_compact(v['value'])}" for v in entry["values"])
                print(f"{_compact(entry['key'])} → {cpus}")
            else:
                print(f"{_compact(entry['key'])} → {_compact(entry['value'])}")
        if not as_json:
            print(f"{count:,} entries" + (f" (--limit {limit})" if count == limit else ""))


def _show_links(found: Sequence[ins.LinkInfo], as_json: bool) -> None:
    if as_json:
        for link in found:
            emit({"id": link.id, "type": link.type, "prog_id": link.prog_id, "target": link.target, **link.details,
                  "pids": [dataclasses.asdict(h) for h in link.pids]})
        return
    rows = [[str(link.id), link.type, str(link.prog_id), link.target, _holders(link.pids)] for link in found]
    caption = "held by '-': pinned, or kept by the kernel object it attaches to"
    _print_table(f"{len(found)} links", ["id", "type", "prog", "target", "held by"], rows, caption)


def _show_pins(found: Sequence[ins.Pin], root: str, as_json: bool) -> None:
    if as_json:
        for pin in found:
            emit(dataclasses.asdict(pin))
        return
    from rich.tree import Tree

    tree = Tree(root)
    branches = {root.rstrip("/") or "/": tree}

    def branch(directory: str) -> Tree:
        if directory not in branches:
            branches[directory] = branch(os.path.dirname(directory)).add(os.path.basename(directory) + "/")
        return branches[directory]

    for pin in found:
        what = f"{pin.kind} {pin.id} {pin.type} {pin.name}" + (f" ({pin.target})" if pin.target else "")
        if pin.error:
            what = f"cannot open: {pin.error}"
        branch(os.path.dirname(pin.path)).add(f"{os.path.basename(pin.path)}  {what}")
    _print(tree)


def _show_net(found: Sequence[ins.NetAttachment], as_json: bool) -> None:
    if as_json:
        for net in found:
            emit(dataclasses.asdict(net))
        return
    rows = [[net.ifname, net.hook, net.mode or "-", str(net.prog_id), net.prog_name,
             str(net.link_id) if net.link_id is not None else "-",
             f"{net.priority}/{net.handle:#x}" if net.priority is not None and net.handle is not None else "-"]
            for net in found]
    caption = "link '-': attached without a BPF link, stays until removed (ip link / tc filter del)"
    _print_table(f"{len(found)} network attachments", ["interface", "hook", "mode", "prog", "name", "link",
                                                        "prio/handle"], rows, caption)


def _show_verdict(verdict: ins.Verdict, as_json: bool, whole_log: bool) -> int:
    name = os.path.basename(verdict.path)
    rejection = verdict.rejection
    if rejection is not None:
        log = list(rejection.log) if whole_log else rejection.tail(_TAIL)
        if as_json:
            emit({"file": verdict.path, "accepted": False, "program": rejection.program, "cause": rejection.cause,
                  "source_line": rejection.source_line or None, "log": log})
        print(f"bpfscope inspect verify: {name}: {rejection}", file=sys.stderr)
        if not as_json:
            print("\n".join(log), file=sys.stderr)
        return 1
    if as_json:
        for p in verdict.programs:
            emit({"file": verdict.path, "accepted": True, **dataclasses.asdict(p)})
        return 0
    rows = [[p.name, p.section, p.type, "-" if p.verified_insns is None else f"{p.verified_insns:,}",
             _bytes(p.bytes_xlated), _bytes(p.bytes_jited)]
            for p in verdict.programs]
    _print_table(f"{name}: accepted: {count_of(len(verdict.programs), 'program')}, {count_of(verdict.maps, 'map')}",
                 ["program", "section", "type", "insns verified", "xlated", "jited"], rows)
    for p in verdict.programs:
        if p.log:
            print(f"--- verifier log of {p.name} ---")
            print("\n".join(p.log))
    return 0
