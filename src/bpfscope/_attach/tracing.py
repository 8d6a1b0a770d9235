"""Kernel tracing hooks: kprobes (one function, or many by pattern), the BTF-typed hooks whose target is
fixed at load (fentry, fexit, fmod_ret, tp_btf), freplace onto another BPF program, raw tracepoints and
BPF LSM hooks. Each goes through libbpf's own attach function."""

from __future__ import annotations

import ctypes
import errno
from collections.abc import Sequence
from typing import TYPE_CHECKING, Optional

from .. import _libbpf
from .._uapi import AttachType, ProgramType
from ..errors import BpfscopeError, NotSupportedError
from ..features import Feature, require
from ..link import LibbpfLink
from ..mounts import ensure_tracefs
from . import TRACE, attached, describe, expect_type, probes

if TYPE_CHECKING:
    from ..program import Program

__all__ = ["freplace", "kprobe", "kprobe_multi", "lsm", "raw_tracepoint", "set_attach_target", "tracepoint", "tracing"]

_BTF_HOOKS: dict[int, str] = {AttachType.TRACE_FENTRY: "fentry", AttachType.TRACE_FEXIT: "fexit",
              AttachType.MODIFY_RETURN: "fmod_ret", AttachType.TRACE_RAW_TP: "tp_btf"}


def _kernel_has_function(name: str) -> bool:
    """Whether /proc/kallsyms lists `name` (in the kernel or a loaded module)."""
    with open("/proc/kallsyms") as f:
        return any(line.split(maxsplit=3)[2] == name for line in f)


def _expected_attach_type(program: Program) -> int:
    return int(_libbpf.bpf_program__expected_attach_type(program._ptr))


def kprobe(program: Program, symbol: Optional[str], *, offset: int, address: Optional[int], retprobe: bool,
           cookie: int) -> LibbpfLink:
    expect_type(program, "attach_kprobe", ProgramType.KPROBE)
    if (symbol is None) == (address is None):
        raise BpfscopeError(errno.EINVAL, "attach_kprobe takes a kernel function name or address=, one of them")
    if address is not None and offset:
        raise BpfscopeError(errno.EINVAL, "offset= goes with a function name; an address is already exact")
    require(Feature.KPROBES)
    kind = "kretprobe" if retprobe else "kprobe"
    where = f"{symbol}+{offset:#x}" if symbol and offset else symbol or f"{address:#x}"
    opts = _libbpf.BpfKprobeOpts(sz=ctypes.sizeof(_libbpf.BpfKprobeOpts), bpf_cookie=cookie,
                                 offset=offset if address is None else address, retprobe=retprobe)
    with _libbpf.captured_log():
        ptr = _libbpf.bpf_program__attach_kprobe_opts(program._ptr, symbol.encode() if symbol else None, opts)
    err = ctypes.get_errno()
    if not ptr and symbol and err in (errno.ENOENT, errno.EINVAL) and not _kernel_has_function(symbol):
        raise BpfscopeError(errno.ENOENT, f"no kernel function {symbol!r} (not in /proc/kallsyms)")
    ctypes.set_errno(err)
    return LibbpfLink(attached(ptr, f"attach {program.name} as {kind} {where}", TRACE), f"{kind} {where}")


def kprobe_multi(program: Program, pattern: Optional[str], *, symbols: Sequence[str], addresses: Sequence[int],
                 cookies: Sequence[int], retprobe: bool) -> LibbpfLink:
    expect_type(program, "attach_kprobe_multi", ProgramType.KPROBE)
    if sum(map(bool, (pattern, symbols, addresses))) != 1:
        raise BpfscopeError(errno.EINVAL, "attach_kprobe_multi takes a pattern, symbols= or addresses=, one of them")
    if cookies and len(cookies) != len(symbols or addresses):
        raise BpfscopeError(errno.EINVAL, "cookies= needs one value per symbol or address")
    if _expected_attach_type(program) != AttachType.TRACE_KPROBE_MULTI:
        raise BpfscopeError(errno.EINVAL, f"{describe(program)} was not loaded for multi-kprobes: its section must "
                                          "be kprobe.multi or kretprobe.multi")
    missing = probes.kprobe_multi()
    if missing is not None:
        raise missing
    count = len(symbols or addresses)
    names = (ctypes.c_char_p * count)(*(s.encode() for s in symbols)) if symbols else None
    addrs = (ctypes.c_ulong * count)(*addresses) if addresses else None
    values = (ctypes.c_uint64 * count)(*cookies) if cookies else None
    opts = _libbpf.BpfKprobeMultiOpts(sz=ctypes.sizeof(_libbpf.BpfKprobeMultiOpts), syms=names, addrs=addrs,
                                      cookies=values, cnt=0 if pattern else count, retprobe=retprobe)
    kind = "kretprobe.multi" if retprobe else "kprobe.multi"
    what = repr(pattern) if pattern else f"{count} {'functions' if symbols else 'addresses'}"
    with _libbpf.captured_log():
        ptr = _libbpf.bpf_program__attach_kprobe_multi_opts(program._ptr, pattern.encode() if pattern else None, opts)
    unknown = f"no kernel function matches {what}" if pattern else f"not every one of {what} is a kernel function"
    return LibbpfLink(attached(ptr, f"attach {program.name} as {kind} on {what}", TRACE,
                               {errno.ENOENT: unknown, errno.ESRCH: unknown}), f"{kind} {what}")


def tracing(program: Program, *, cookie: int) -> LibbpfLink:
    expect_type(program, "attach_tracing", ProgramType.TRACING)
    hook = _BTF_HOOKS.get(_expected_attach_type(program))
    if hook is None:
        raise BpfscopeError(errno.EINVAL, f"{describe(program)} is an iterator: attach it with attach_iter")
    opts = _libbpf.BpfTraceOpts(sz=ctypes.sizeof(_libbpf.BpfTraceOpts), cookie=cookie)
    with _libbpf.captured_log():
        ptr = _libbpf.bpf_program__attach_trace_opts(program._ptr, opts)
    what = program.section.replace("/", " ", 1)
    return LibbpfLink(attached(ptr, f"attach {program.name} as {what}", TRACE), what)


def set_attach_target(program_ptr: int, name: str, function: str, target: Optional[Program]) -> None:
    """Before load: program `name` (fentry, fexit, fmod_ret, freplace) is for `function`, of the kernel or
    of BPF program `target` (bpf_program__set_attach_target)."""
    where = f"program {target.name!r}" if target is not None else "the kernel"
    with _libbpf.captured_log():
        ret = _libbpf.bpf_program__set_attach_target(program_ptr, target.fd if target is not None else 0,
                                                     function.encode())
    if ret in (-errno.ENOENT, -errno.ESRCH):
        raise BpfscopeError(-ret, f"no function {function!r} in the BTF of {where}")
    _libbpf.check(ret, f"set the attach target of {name!r} to {function} of {where}", TRACE)


def freplace(program: Program, target: Optional[Program], function: Optional[str]) -> LibbpfLink:
    expect_type(program, "attach_freplace", ProgramType.EXT)
    if (target is None) != (function is None):
        raise BpfscopeError(errno.EINVAL, "attach_freplace takes a target program and its function, or neither "
                                          "(the target given before load)")
    what = f"freplace of {function}() in program {target.name!r}" if target and function else program.section
    with _libbpf.captured_log():
        if target is not None and function is not None:
            ptr = _libbpf.bpf_program__attach_freplace(program._ptr, target.fd, function.encode())
        else:
            ptr = _libbpf.bpf_program__attach_trace_opts(program._ptr, None)
    meaning = {errno.ENOENT: f"program {target.name!r} has no global function {function!r}"} if target else {}
    return LibbpfLink(attached(ptr, f"attach {program.name} as {what}", TRACE, meaning), what)


def tracepoint(program: Program, category: str, name: str) -> LibbpfLink:
    expect_type(program, "attach_tracepoint", ProgramType.TRACEPOINT)
    ensure_tracefs()  # libbpf reads tracepoint ids there
    what = f"tracepoint {category}:{name}"
    with _libbpf.captured_log():
        ptr = _libbpf.bpf_program__attach_tracepoint(program._ptr, category.encode(), name.encode())
    if not ptr and ctypes.get_errno() == errno.ENOENT:
        raise NotSupportedError(what, "no such tracepoint on this kernel")
    return LibbpfLink(attached(ptr, f"attach {program.name} to {what}", TRACE), what)


def raw_tracepoint(program: Program, name: str) -> LibbpfLink:
    expect_type(program, "attach_raw_tracepoint", ProgramType.RAW_TRACEPOINT, ProgramType.RAW_TRACEPOINT_WRITABLE)
    with _libbpf.captured_log():
        ptr = _libbpf.bpf_program__attach_raw_tracepoint(program._ptr, name.encode())
    what = f"raw tracepoint {name}"
    return LibbpfLink(attached(ptr, f"attach {program.name} to {what}", TRACE,
                               {errno.ENOENT: f"no tracepoint {name!r} in this kernel"}), what)


def lsm(program: Program) -> LibbpfLink:
    expect_type(program, "attach_lsm", ProgramType.LSM)
    if _expected_attach_type(program) == AttachType.LSM_CGROUP:
        raise BpfscopeError(errno.EINVAL, f"{describe(program)} runs per cgroup: attach it with attach_cgroup")
    missing = probes.bpf_lsm()
    if missing is not None:
        raise missing
    with _libbpf.captured_log():
        ptr = _libbpf.bpf_program__attach_lsm(program._ptr)
    what = program.section.replace("/", " hook ", 1)
    return LibbpfLink(attached(ptr, f"attach {program.name} as {what}", TRACE), what)
