"""tracefs, bpffs and securityfs: where they are mounted, and mounting them when bpfscope needs them. A
fresh machine has none of them: libbpf finds tracepoint ids in tracefs, pins live on bpffs, and the kernel
shows its lockdown mode and active LSMs in securityfs."""

from __future__ import annotations

import ctypes
import errno
import os
import re
from dataclasses import dataclass

from . import _libbpf
from ._privileges import SECURITYFS
from .errors import NotSupportedError

__all__ = [
    "SECURITYFS",
    "Mount",
    "cgroup2_path",
    "ensure_bpffs",
    "ensure_securityfs",
    "ensure_tracefs",
    "kernel_filesystems",
    "mounts",
    "parse_mounts",
    "securityfs_path",
    "tracefs_path",
]

TRACEFS = "/sys/kernel/tracing"
BPFFS = "/sys/fs/bpf"
CGROUP = "/sys/fs/cgroup"
# Where tracefs appears when only debugfs is mounted; libbpf looks here first.
_DEBUGFS_TRACING = "/sys/kernel/debug/tracing"


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    fstype: str


# /proc/mounts writes space, tab, newline and backslash as \ooo octal escapes.
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mounts(text: str) -> list[Mount]:
    """Parses /proc/mounts (fstab format)."""
    result = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            result.append(Mount(_unescape(fields[0]), _unescape(fields[1]), fields[2]))
    return result


def mounts() -> list[Mount]:
    """The mounts of this process's mount namespace."""
    with open("/proc/mounts") as f:
        return parse_mounts(f.read())


def kernel_filesystems() -> frozenset[str]:
    """File system types the running kernel can mount (/proc/filesystems)."""
    with open("/proc/filesystems") as f:
        return frozenset(line.split()[-1] for line in f if line.strip())


def _mounted(fstype: str, target: str | None = None) -> list[str]:
    return [m.target for m in mounts() if m.fstype == fstype and (target is None or m.target == target)]


def tracefs_path() -> str | None:
    """Where tracefs is mounted (/sys/kernel/tracing preferred), or None."""
    targets = _mounted("tracefs")
    for preferred in (TRACEFS, _DEBUGFS_TRACING):
        if preferred in targets:
            return preferred
    return targets[0] if targets else None


def cgroup2_path() -> str | None:
    """Where cgroup v2 is mounted: /sys/fs/cgroup on a unified hierarchy, else the first place (a hybrid
    one puts it at /sys/fs/cgroup/unified, beside systemd's v1 controllers), or None."""
    targets = _mounted("cgroup2")
    return CGROUP if CGROUP in targets else (targets[0] if targets else None)


def _mount(fstype: str, source: str, target: str, data: str | None) -> None:
    ctypes.set_errno(0)
    ret = _libbpf.libc.mount(
        source.encode(), target.encode(), fstype.encode(), ctypes.c_ulong(0), data.encode() if data else None
    )
    if ret == 0:
        return
    err = ctypes.get_errno() or errno.EINVAL
    if err == errno.ENODEV:
        raise NotSupportedError(fstype, f"the kernel cannot mount {fstype} (not in /proc/filesystems)")
    raise _libbpf.error(err, f"mount -t {fstype} {source} {target}", "CAP_SYS_ADMIN")


def ensure_tracefs() -> str:
    """Returns where tracefs is mounted, mounting it on /sys/kernel/tracing first if it is nowhere."""
    path = tracefs_path()
    if path is None:
        _mount("tracefs", "nodev", TRACEFS, None)
        path = TRACEFS
    return path


def ensure_bpffs(path: str = BPFFS) -> str:
    """Returns `path` with bpffs mounted on it, mounting it (mode 0700, as bpftool does) if needed."""
    target = os.path.realpath(path)
    if not _mounted("bpf", target):
        os.makedirs(target, mode=0o700, exist_ok=True)
        _mount("bpf", "bpf", target, "mode=0700")
    return target


def securityfs_path() -> str | None:
    """Where securityfs is mounted (/sys/kernel/security preferred), or None."""
    targets = _mounted("securityfs")
    return SECURITYFS if SECURITYFS in targets else (targets[0] if targets else None)


def ensure_securityfs() -> str:
    """Returns where securityfs is mounted, mounting it on /sys/kernel/security first if it is nowhere
    (as systemd does at boot): lockdown and the LSM list are read there."""
    path = securityfs_path()
    if path is None:
        _mount("securityfs", "securityfs", SECURITYFS, None)
        path = SECURITYFS
    return path
