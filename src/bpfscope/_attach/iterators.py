"""Iterators (SEC("iter/task"), "iter/bpf_map_elem", "iter/tcp", ...): attached once with what they walk,
then read as often as wanted, each read a fresh walk."""

from __future__ import annotations

import ctypes
import errno
import os
from typing import TYPE_CHECKING, Optional, Union

from .. import _libbpf
from .._uapi import AttachType, CgroupIterOrder, ProgramType
from ..errors import BpfscopeError, NotSupportedError
from ..link import IterLink
from . import TRACE, attached, describe, expect_type
from .cgroup import cgroup_directory

if TYPE_CHECKING:
    from ..maps import Map
    from ..program import Program

__all__ = ["attach", "MAP_ITERATORS"]

# Iterators that walk one map, which attaching must name (libbpf cannot attach them from the section).
MAP_ITERATORS = ("bpf_map_elem", "bpf_sk_storage_map", "sockmap")


def attach(program: Program, *, walk_map: Optional[Map], pid: Optional[int], tid: Optional[int],
           cgroup: Union[str, os.PathLike[str], None], order: CgroupIterOrder) -> IterLink:
    expect_type(program, "attach_iter", ProgramType.TRACING)
    if _libbpf.bpf_program__expected_attach_type(program._ptr) != AttachType.TRACE_ITER:
        raise BpfscopeError(errno.EINVAL, f"{describe(program)} is not an iterator: attach it with attach_tracing")
    if sum(x is not None for x in (walk_map, pid, tid, cgroup)) > 1:
        raise BpfscopeError(errno.EINVAL, "attach_iter walks one map, one process, one thread or one cgroup: "
                                          "give one of map=, pid=, tid=, cgroup=")
    target = program.section.partition("/")[2]
    if target in MAP_ITERATORS and walk_map is None:
        raise BpfscopeError(errno.EINVAL, f"{describe(program)} walks one map: give it as map=")
    info = _libbpf.BpfIterLinkInfo()
    what = f"iterator {target}"
    cgroup_fd = -1
    if walk_map is not None:
        info.map.map_fd, what = walk_map.fd, f"{what} over map {walk_map.name!r}"
    elif pid is not None:
        info.task.pid, what = pid, f"{what} of process {pid}"
    elif tid is not None:
        info.task.tid, what = tid, f"{what} of thread {tid}"
    elif cgroup is not None:
        directory = cgroup_directory(cgroup)
        cgroup_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        info.cgroup.cgroup_fd, info.cgroup.order = cgroup_fd, order
        what = f"{what} from cgroup {directory} ({order.name.lower()})"
    given = any(x is not None for x in (walk_map, pid, tid, cgroup))
    opts = _libbpf.BpfIterAttachOpts(sz=ctypes.sizeof(_libbpf.BpfIterAttachOpts), link_info=ctypes.pointer(info),
                                     link_info_len=ctypes.sizeof(info))
    try:
        with _libbpf.captured_log():
            ptr = _libbpf.bpf_program__attach_iter(program._ptr, opts if given else None)
    finally:
        if cgroup_fd >= 0:
            os.close(cgroup_fd)
    if not ptr and ctypes.get_errno() == errno.E2BIG and walk_map is None:
        # The kernel's bpf_iter_link_info ends before the task and cgroup members.
        raise NotSupportedError("iterators of one task or cgroup", "pid=, tid= and cgroup= need Linux 6.1")
    return IterLink(attached(ptr, f"attach {program.name} as {what}", TRACE), what)
