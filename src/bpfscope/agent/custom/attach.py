"""How a custom program's programs attach, decided from each one's section and the metrics YAML's
`attach:` before anything loads: a plan per program, run once the object is loaded."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Callable

from ... import netdev
from ...errors import BpfscopeError
from ...link import Link
from ...mounts import tracefs_path
from ...object import ObjectSpec
from ...program import Program, TcDirection, XdpMode, resolve_binary
from ..config import ConfigError, Fields

__all__ = ["Attach", "AttachSpec", "plan_attach", "read_attach"]

Attach = Callable[[Program], Link]  # attaches one loaded program as planned


@dataclass(frozen=True)
class AttachSpec:
    xdp: tuple[str, ...] = ()
    xdp_mode: XdpMode = XdpMode.AUTO
    tc_ingress: tuple[str, ...] = ()
    tc_egress: tuple[str, ...] = ()
    perf_frequency: int = 99


def read_attach(f: Fields) -> AttachSpec:
    """The `attach:` section: interfaces (each must exist now), XDP mode, perf event frequency."""
    mode = f.string("xdp_mode", "auto") or "auto"
    try:
        xdp_mode = XdpMode(mode)
    except ValueError:
        raise f.error("xdp_mode", f"must be auto, native or generic, not {mode!r}") from None
    lists = {}
    for key in ("xdp", "tc_ingress", "tc_egress"):
        names = f.strings(key, [])
        for i, iface in enumerate(names):
            try:
                netdev.ifindex(iface)
            except BpfscopeError as exc:
                raise f.error(f"{key}[{i}]", str(exc)) from None
        if len(set(names)) != len(names):
            raise f.error(key, "names an interface twice")
        lists[key] = tuple(names)
    frequency = f.integer("perf_frequency", 99, 1, 100_000)
    assert frequency is not None
    f.done()
    return AttachSpec(lists["xdp"], xdp_mode, lists["tc_ingress"], lists["tc_egress"], frequency)


def plan_attach(spec: ObjectSpec, object_name: str, attach: AttachSpec, f: Fields) -> tuple[tuple[str, Attach], ...]:
    """How each program attaches, decided from its section before anything loads."""
    plans: list[tuple[str, Attach]] = []
    xdp_programs, tc_programs = [], []
    for program in spec.programs.values():
        if not program.autoload:
            continue
        section = program.section
        kind, _, rest = section.partition("/")
        where = f"{object_name}: program {program.name!r}"
        if kind in ("tracepoint", "tp"):
            category, _, event = rest.partition("/")
            if not category or not event or "/" in event:
                raise ConfigError(where, f"SEC({section!r}) names no tracepoint: write SEC(\"{kind}/CATEGORY/NAME\")")
            tracing = tracefs_path()
            if tracing and not os.path.isdir(os.path.join(tracing, "events", category, event)):
                raise ConfigError(where, f"SEC({section!r}): no tracepoint {category}:{event} on this kernel")
            plans.append((program.name, functools.partial(_attach_tracepoint, category=category, event=event)))
        elif kind in ("uprobe", "uretprobe", "uprobe.s", "uretprobe.s"):
            plans.append((program.name, _uprobe_plan(where, section, kind, rest)))
        elif section == "perf_event":
            plans.append((program.name, functools.partial(_attach_perf_event, frequency=attach.perf_frequency)))
        elif section in ("xdp", "xdp.frags"):
            xdp_programs.append(program.name)
            for iface in attach.xdp:
                plans.append((program.name, functools.partial(_attach_xdp, iface=iface, mode=attach.xdp_mode)))
        elif section == "tc":
            tc_programs.append(program.name)
            for direction, ifaces in ((TcDirection.INGRESS, attach.tc_ingress), (TcDirection.EGRESS, attach.tc_egress)):
                for iface in ifaces:
                    plans.append((program.name, functools.partial(_attach_tc, iface=iface, direction=direction)))
        else:
            raise ConfigError(where, f"the agent cannot attach SEC({section!r}) programs; it attaches tracepoint/, "
                              "tp/, uprobe/, uretprobe/, perf_event, xdp and tc (kprobes and fentry: not on "
                              "every kernel)")
    for key, programs, ifaces, sec in (("xdp", xdp_programs, attach.xdp, "xdp"),
                                       ("tc_ingress", tc_programs, attach.tc_ingress + attach.tc_egress, "tc")):
        if programs and not ifaces:
            raise f.error(key, f"is required: SEC(\"{sec}\") program {programs[0]!r} needs an interface")
        if ifaces and not programs:
            raise f.error(key, f"{object_name} has no SEC(\"{sec}\") program to attach")
    if len(xdp_programs) > 1 and attach.xdp:
        raise f.error("xdp", f"SEC(\"xdp\") programs {', '.join(xdp_programs)}: an interface takes one XDP program")
    return tuple(plans)


def _uprobe_plan(where: str, section: str, kind: str, target: str) -> Attach:
    binary, sep, function = target.partition(":")
    if not binary or not sep or not function:
        raise ConfigError(where, f"SEC({section!r}) names no function: write SEC(\"{kind}/BINARY:FUNCTION\")")
    symbol, plus, offset_text = function.partition("+")
    try:
        offset = int(offset_text, 0) if plus else 0
        path = resolve_binary(binary)
    except ValueError:
        raise ConfigError(where, f"SEC({section!r}): {offset_text!r} is not an offset") from None
    except BpfscopeError as exc:
        raise ConfigError(where, f"SEC({section!r}): {exc}") from None
    return functools.partial(_attach_uprobe, path=path, symbol=symbol, offset=offset,
                             retprobe=kind.startswith("uretprobe"))


def _attach_tracepoint(program: Program, *, category: str, event: str) -> Link:
    return program.attach_tracepoint(category, event)


def _attach_uprobe(program: Program, *, path: str, symbol: str, offset: int, retprobe: bool) -> Link:
    return program.attach_uprobe(path, symbol, offset=offset, retprobe=retprobe)


def _attach_perf_event(program: Program, *, frequency: int) -> Link:
    return program.attach_perf_event(frequency=frequency)


def _attach_xdp(program: Program, *, iface: str, mode: XdpMode) -> Link:
    return program.attach_xdp(iface, mode=mode)


def _attach_tc(program: Program, *, iface: str, direction: TcDirection) -> Link:
    return program.attach_tc(iface, direction=direction)
