"""Program.attach(): what libbpf's bpf_program__attach does from the section name, the reference behaviour,
and for a section that cannot say where to attach (an XDP program, a uprobe without a target), one line
naming the method that takes what is missing. `autoattaches` is what Object.attach_all goes by, as a
libbpf skeleton's attach does."""

from __future__ import annotations

import ctypes
import errno
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .. import _libbpf
from .._uapi import AttachType, ProgramType
from ..errors import BpfscopeError
from ..features import Feature, require
from ..link import IterLink, LibbpfLink, Link, LinkGroup
from ..mounts import ensure_tracefs
from . import TRACE, attached, describe, probes, struct_ops, uprobes
from .iterators import MAP_ITERATORS

if TYPE_CHECKING:
    from ..program import Program

__all__ = ["attach", "attach_all", "autoattaches", "explicit_method"]

# The explicit method for each program type whose section never names a target.
_METHODS = {
    ProgramType.XDP: "attach_xdp(iface)",
    ProgramType.SCHED_CLS: "attach_tc(iface)",
    ProgramType.SCHED_ACT: "attach_tc(iface)",
    ProgramType.PERF_EVENT: "attach_perf_event(event=..., frequency= or period=)",
    ProgramType.SOCKET_FILTER: "attach_socket(sock)",
    ProgramType.SK_LOOKUP: "attach_netns(netns)",
    ProgramType.FLOW_DISSECTOR: "attach_netns(netns)",
    ProgramType.SK_MSG: "attach_sockmap(map)",
    ProgramType.SK_SKB: "attach_sockmap(map, attach_type=...)",
    ProgramType.NETFILTER: "attach_netfilter(family=, hook=, priority=)",
    ProgramType.STRUCT_OPS: "Object.attach_struct_ops(map name), or Object.attach_all()",
    ProgramType.EXT: "attach_freplace(target, function)",
    ProgramType.TRACEPOINT: "attach_tracepoint(category, name)",
    ProgramType.RAW_TRACEPOINT: "attach_raw_tracepoint(name)",
    ProgramType.RAW_TRACEPOINT_WRITABLE: "attach_raw_tracepoint(name)",
    ProgramType.LSM: "attach_cgroup(path)",  # only lsm_cgroup/ cannot attach from its section
    **{t: "attach_cgroup(path)" for t in (ProgramType.CGROUP_SKB, ProgramType.CGROUP_SOCK,
                                          ProgramType.CGROUP_SOCK_ADDR, ProgramType.SOCK_OPS,
                                          ProgramType.CGROUP_DEVICE, ProgramType.CGROUP_SYSCTL,
                                          ProgramType.CGROUP_SOCKOPT)},
}
# Sections of kprobe-type programs, by prefix, and the method that takes their target.
_PROBE_METHODS = (
    ("usdt", "attach_usdt(binary, provider, name)"),
    ("uprobe.multi", "attach_uprobe_multi(binary, pattern)"),
    ("uretprobe.multi", "attach_uprobe_multi(binary, pattern, retprobe=True)"),
    ("uprobe", "attach_uprobe(binary, symbol)"),
    ("uretprobe", "attach_uprobe(binary, symbol, retprobe=True)"),
    ("kprobe.multi", "attach_kprobe_multi(pattern)"),
    ("kretprobe.multi", "attach_kprobe_multi(pattern, retprobe=True)"),
    ("kretprobe", "attach_kprobe(symbol, retprobe=True)"),
)


def _expected(program: Program) -> int:
    return int(_libbpf.bpf_program__expected_attach_type(program._ptr))


def explicit_method(program: Program) -> str:
    """The Program method that attaches this program given its target."""
    if program.type is ProgramType.KPROBE:
        prefix = program.section.partition("/")[0]
        return next((m for p, m in _PROBE_METHODS if prefix == p or prefix.startswith(p + ".")),
                    "attach_kprobe(symbol)")
    if program.type is ProgramType.TRACING and _expected(program) == AttachType.TRACE_ITER:
        return "attach_iter(map=...)"
    return _METHODS.get(program.type, "") if isinstance(program.type, ProgramType) else ""


def _names_target(section: str) -> bool:
    return bool(section.partition("/")[2])


def autoattaches(program: Program) -> bool:
    """Whether the section alone says where to attach, as libbpf's auto-attach sees it: a kprobe, uprobe,
    USDT probe or tracepoint that names its target; a hook fixed at load (fentry, fexit, fmod_ret,
    tp_btf, lsm, freplace); an iterator that needs no map. False also where the program asked to be left
    out (bpf_program__set_autoattach)."""
    if not _libbpf.bpf_program__autoattach(program._ptr):
        return False
    if program.type in (ProgramType.KPROBE, ProgramType.TRACEPOINT, ProgramType.RAW_TRACEPOINT,
                        ProgramType.RAW_TRACEPOINT_WRITABLE):
        return _names_target(program.section)
    if program.type is ProgramType.TRACING:
        return _expected(program) != AttachType.TRACE_ITER or \
            program.section.partition("/")[2] not in MAP_ITERATORS
    if program.type is ProgramType.LSM:
        return _expected(program) != AttachType.LSM_CGROUP
    return program.type is ProgramType.EXT


def _prepare(program: Program) -> None:
    """What the kernel must have, or mount, before libbpf attaches this kind, checked first so a missing
    feature reads as itself rather than as the errno libbpf met."""
    prefix = program.section.partition("/")[0]
    if program.type is ProgramType.TRACEPOINT:
        ensure_tracefs()  # libbpf reads tracepoint ids there
    elif program.type is ProgramType.KPROBE and prefix.startswith(("kprobe.multi", "kretprobe.multi")):
        missing = probes.kprobe_multi()
        if missing is not None:
            raise missing
    elif program.type is ProgramType.KPROBE and prefix.startswith(("kprobe", "kretprobe", "ksyscall",
                                                                   "kretsyscall")):
        require(Feature.KPROBES)
    elif program.type is ProgramType.LSM:
        missing = probes.bpf_lsm()
        if missing is not None:
            raise missing


def attach(program: Program) -> Link:
    if not autoattaches(program):
        method = explicit_method(program)
        hint = f"attach it with {method}" if method else "bpfscope has no attach method for this kind"
        raise BpfscopeError(errno.EOPNOTSUPP, f"{describe(program)} cannot attach from its section alone: {hint}")
    _prepare(program)
    prefix, _, target = program.section.partition("/")
    if prefix in ("uprobe.multi", "uretprobe.multi") and _libbpf.version() < (1, 3):
        binary, _, pattern = target.partition(":")  # as libbpf 1.3 reads it: binary:pattern
        return uprobes.uprobe_multi(program, binary, pattern, pid=None, retprobe=prefix == "uretprobe.multi",
                                    cookies=())
    with _libbpf.captured_log():
        ptr = _libbpf.bpf_program__attach(program._ptr)
    what = program.section
    if not ptr and ctypes.get_errno() == errno.ENOENT:
        raise BpfscopeError(errno.ENOENT, f"attach {describe(program)}: {target} does not exist here")
    ptr = attached(ptr, f"attach {describe(program)}", TRACE)
    iterator = program.type is ProgramType.TRACING and _expected(program) == AttachType.TRACE_ITER
    return IterLink(ptr, what) if iterator else LibbpfLink(ptr, what)


def attach_all(programs: Iterable[Program], object_ptr: int) -> LinkGroup:
    """Every program that autoattaches, and every struct_ops map, attached; on a failure, what was attached
    is closed again before the error goes up."""
    links: list[Link] = []
    try:
        for program in programs:
            if autoattaches(program):
                links.append(attach(program))
        for name in struct_ops.map_names(object_ptr):
            links.append(struct_ops.attach(object_ptr, name))
    except BaseException:
        for link in links:
            link.close()
        raise
    return LinkGroup(links, f"{len(links)} programs and struct_ops maps attached from their sections")
