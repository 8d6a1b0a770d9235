"""User-space probes: a uprobe on one function of a binary or library, a multi-uprobe link on every
function a pattern matches (Linux 6.6+), and USDT probes (static tracepoints a program declares in its
.note.stapsdt, semaphores included, which libbpf's USDT support counts up while attached)."""

from __future__ import annotations

import ctypes
import errno
import glob
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Optional

from .. import _libbpf
from .._uapi import BPF_F_UPROBE_MULTI_RETURN, BPF_LINK_CREATE, AttachType, ProgramType
from ..errors import BpfscopeError, NotSupportedError
from ..link import FdLink, LibbpfLink
from . import TRACE, attached, describe, expect_type, probes
from .elf import function_offsets

if TYPE_CHECKING:
    from ..program import Program

__all__ = ["resolve_binary", "uprobe", "uprobe_multi", "usdt"]

_LIBRARY_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu",
                 "/usr/lib/aarch64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib", "/usr/local/lib")


def resolve_binary(target: str) -> str:
    """A path as given, or a library name ("libc", "libssl.so.3") looked up where the loader looks."""
    if os.sep in target:
        if not os.path.isfile(target):
            raise BpfscopeError(errno.ENOENT, f"no binary or library at {target}")
        return os.path.realpath(target)
    name = target if target.startswith("lib") else f"lib{target}"
    for directory in _LIBRARY_DIRS:
        # libc.so.6 before libc.so: the unversioned name is often a linker script, not ELF.
        candidates = glob.glob(os.path.join(directory, name)) + sorted(
            glob.glob(os.path.join(directory, f"{name}.so*")) + glob.glob(os.path.join(directory, f"{name}-*.so*")),
            key=lambda p: (p.endswith(".so"), p))
        for candidate in candidates:
            if _is_elf(candidate):
                return os.path.realpath(candidate)
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(directory, target)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return os.path.realpath(candidate)
    raise BpfscopeError(errno.ENOENT, f"no binary or library named {target!r} (give a path)")


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def _check_pid(pid: Optional[int]) -> None:
    if pid is not None and not os.path.isdir(f"/proc/{pid}"):
        raise BpfscopeError(errno.ESRCH, f"no process with pid {pid}")


def uprobe(program: Program, target: str, symbol: Optional[str], *, offset: int, pid: Optional[int],
           retprobe: bool) -> LibbpfLink:
    expect_type(program, "attach_uprobe", ProgramType.KPROBE)
    path = resolve_binary(target)
    _check_pid(pid)
    opts = _libbpf.BpfUprobeOpts(sz=ctypes.sizeof(_libbpf.BpfUprobeOpts), retprobe=retprobe)
    if symbol:
        opts.func_name = symbol.encode()
    kind = "uretprobe" if retprobe else "uprobe"
    what = f"{kind} {path}:{symbol or hex(offset)}" + (f" pid {pid}" if pid is not None else "")
    with _libbpf.captured_log():  # errno says what failed; keep libbpf's own lines off stderr
        ptr = _libbpf.bpf_program__attach_uprobe_opts(program._ptr, -1 if pid is None else pid, path.encode(),
                                                      offset, opts)
    meaning = {errno.ENOENT: f"symbol {symbol!r} not found in {path}"} if symbol else {}
    return LibbpfLink(attached(ptr, f"attach {program.name} as {what}", TRACE, meaning), what)


def uprobe_multi(program: Program, target: str, pattern: str, *, pid: Optional[int], retprobe: bool,
                 cookies: Sequence[int]) -> FdLink:
    expect_type(program, "attach_uprobe_multi", ProgramType.KPROBE)
    if _libbpf.bpf_program__expected_attach_type(program._ptr) != AttachType.TRACE_UPROBE_MULTI:
        raise BpfscopeError(errno.EINVAL, f"{describe(program)} was not loaded for multi-uprobes: its section must "
                                          "be uprobe.multi or uretprobe.multi")
    missing = probes.uprobe_multi()
    if missing is not None:
        raise missing
    path = resolve_binary(target)
    _check_pid(pid)
    functions = function_offsets(path, pattern)
    if not functions:
        raise BpfscopeError(errno.ENOENT, f"no function in {path} matches {pattern!r}")
    if cookies and len(cookies) != len(functions):
        raise BpfscopeError(errno.EINVAL, f"cookies= needs one value per function: {pattern!r} matches "
                                          f"{len(functions)} ({', '.join(sorted(functions))})")
    path_buf = ctypes.create_string_buffer(path.encode())
    offsets = (ctypes.c_uint64 * len(functions))(*functions.values())
    values = (ctypes.c_uint64 * len(functions))(*cookies) if cookies else None
    attr = _libbpf.LinkCreateAttr(prog_fd=program.fd, attach_type=AttachType.TRACE_UPROBE_MULTI)
    multi = attr.u.uprobe_multi
    multi.flags = BPF_F_UPROBE_MULTI_RETURN if retprobe else 0
    multi.path, multi.offsets, multi.cnt = ctypes.addressof(path_buf), ctypes.addressof(offsets), len(functions)
    multi.cookies = ctypes.addressof(values) if values is not None else 0
    multi.pid = pid or 0
    kind = "uretprobe.multi" if retprobe else "uprobe.multi"
    what = f"{kind} {path}:{pattern} ({len(functions)} functions)" + (f" pid {pid}" if pid is not None else "")
    link = _libbpf.bpf(BPF_LINK_CREATE, attr)
    return FdLink(_libbpf.check(link, f"attach {program.name} as {what}", TRACE), what)


def usdt(program: Program, target: Optional[str], provider: str, name: str, *, pid: Optional[int],
         cookie: int) -> LibbpfLink:
    expect_type(program, "attach_usdt", ProgramType.KPROBE)
    if target is None and pid is None:
        raise BpfscopeError(errno.EINVAL, "attach_usdt needs the binary or library, or pid= (its executable)")
    _check_pid(pid)
    path = resolve_binary(target) if target is not None else os.path.realpath(f"/proc/{pid}/exe")
    what = f"usdt {path}:{provider}:{name}" + (f" pid {pid}" if pid is not None else "")
    opts = _libbpf.BpfTraceOpts(sz=ctypes.sizeof(_libbpf.BpfTraceOpts), cookie=cookie)
    with _libbpf.captured_log():
        ptr = _libbpf.bpf_program__attach_usdt(program._ptr, -1 if pid is None else pid, path.encode(),
                                               provider.encode(), name.encode(), opts)
    if not ptr and ctypes.get_errno() == errno.EOPNOTSUPP and pid is None:
        # Without BPF cookies libbpf tells probes apart by address, which differs per process in a shared object.
        raise NotSupportedError("USDT probes in shared objects of every process", "libbpf needs BPF cookies (Linux "
                                "5.15+) for them in a library or PIE executable; give pid=")
    meaning = {errno.ENOENT: f"no USDT probe {provider}:{name} in {path}",
               errno.ESRCH: f"{describe(program)} is not a USDT program: it must include <bpf/usdt.bpf.h> and be "
                            "declared with BPF_USDT"}
    return LibbpfLink(attached(ptr, f"attach {program.name} as {what}", TRACE, meaning), what)
