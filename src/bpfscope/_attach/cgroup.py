"""Cgroup hooks: a program runs for the sockets, devices and sysctls of the processes in one cgroup v2
directory and its descendants. Attached as a BPF link (bpf_link_create on the directory's fd), so the
hook goes with the last fd of the link."""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Optional, Union

from .. import _libbpf
from .._uapi import AttachType, ProgramType
from ..errors import BpfscopeError
from ..link import FdLink
from ..mounts import mounts
from . import NET, describe, expect_type

if TYPE_CHECKING:
    from ..program import Program

__all__ = ["attach", "cgroup_directory"]

_CGROUP_TYPES = (ProgramType.CGROUP_SKB, ProgramType.CGROUP_SOCK, ProgramType.CGROUP_SOCK_ADDR, ProgramType.SOCK_OPS,
                 ProgramType.CGROUP_DEVICE, ProgramType.CGROUP_SYSCTL, ProgramType.CGROUP_SOCKOPT, ProgramType.LSM)


def _cgroup2_mounts() -> list[str]:
    return [m.target for m in mounts() if m.fstype == "cgroup2"]


def cgroup_directory(path: Union[str, os.PathLike[str]]) -> str:
    """The cgroup v2 directory `path` names: absolute, or relative to where cgroup v2 is mounted."""
    roots = _cgroup2_mounts()
    path = os.fspath(path)
    if not os.path.isabs(path):
        if not roots:
            raise BpfscopeError(errno.ENOENT, f"no cgroup v2 is mounted to find cgroup {path!r} in (mount -t cgroup2)")
        path = os.path.join(roots[0], path)
    directory = os.path.realpath(path)
    if not os.path.isdir(directory):
        raise BpfscopeError(errno.ENOENT, f"no cgroup at {path}")
    if not any(directory == root or directory.startswith(root.rstrip("/") + "/") for root in roots):
        where = f"mounted at {', '.join(roots)}" if roots else "not mounted"
        raise BpfscopeError(errno.EINVAL, f"{path} is not a cgroup v2 directory (cgroup BPF programs attach to "
                                          f"cgroup v2, {where})")
    return directory


def attach(program: Program, path: Union[str, os.PathLike[str]], *, attach_type: Optional[AttachType]) -> FdLink:
    expect_type(program, "attach_cgroup", *_CGROUP_TYPES)
    expected = int(_libbpf.bpf_program__expected_attach_type(program._ptr))
    if program.type is ProgramType.LSM and expected != AttachType.LSM_CGROUP:
        raise BpfscopeError(errno.EINVAL, f"{describe(program)} is a global LSM hook: attach it with attach_lsm")
    hook = AttachType(attach_type if attach_type is not None else expected)
    directory = cgroup_directory(path)
    what = f"{hook.name.lower()} of cgroup {directory}"
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        link = _libbpf.bpf_link_create(program.fd, fd, hook, None)
    finally:
        os.close(fd)
    return FdLink(_libbpf.check(link, f"attach {program.name} to {what}", NET), f"{program.name} on {what}")
