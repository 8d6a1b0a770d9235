"""The machinery behind Program's attach methods, one module per family of hooks (tracing, cgroup, net,
iterators, perf events, user-space probes, and auto-attach from the section name). Program's methods stay
thin and call in here; nothing in this package is public API."""

from __future__ import annotations

import ctypes
import errno
from collections.abc import Mapping
from typing import TYPE_CHECKING, Optional, Union

from .. import _libbpf
from .._uapi import ProgramType
from ..errors import BpfscopeError

if TYPE_CHECKING:
    from ..program import Program

__all__ = ["TRACE", "NET", "describe", "expect_type", "attached"]

# What attaching needs, for messages that name what the process lacks (see _libbpf.error).
TRACE = "CAP_BPF+CAP_PERFMON"
NET = "CAP_BPF+CAP_NET_ADMIN"


def describe(program: Program) -> str:
    return f"program {program.name!r} (SEC(\"{program.section}\"))"


def _type_name(prog_type: Union[ProgramType, int]) -> str:
    return prog_type.name.lower() if isinstance(prog_type, ProgramType) else f"type {prog_type}"


def expect_type(program: Program, method: str, *types: ProgramType) -> None:
    """One line before anything reaches the kernel when `method` cannot attach a program of this type."""
    if program.type not in types:
        wanted = " or ".join(_type_name(t) for t in types)
        raise BpfscopeError(errno.EINVAL, f"{method} attaches {wanted} programs; {describe(program)} is a "
                                          f"{_type_name(program.type)} program")


def attached(ptr: Optional[int], op: str, capability: str, meaning: Mapping[int, str] = {}) -> int:
    """The `struct bpf_link *` a libbpf attach function returned, or its errno as one line: `meaning` says
    what an errno means for this kind of hook (ENOENT: no such function), the rest goes to _libbpf.error."""
    if ptr:
        return ptr
    err = ctypes.get_errno() or errno.EINVAL
    if err in meaning:
        raise BpfscopeError(err, meaning[err])
    raise _libbpf.error(err, op, capability)
