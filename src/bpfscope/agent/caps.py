"""Dropping capabilities once programs are attached, as ebpf_exporter does: what serves /metrics then runs
with none in effect, and keeps in its permitted set only what a reload (SIGHUP) raises again for a moment.

Capabilities belong to a thread, not to the process: these calls change the calling thread's (threads it
starts later inherit them), so the agent drops before it starts any, and reloads on its main thread."""

from __future__ import annotations

import ctypes
import errno
import os
from contextlib import contextmanager
from typing import Iterable, Iterator

from ..errors import BpfscopeError, SyscallError

__all__ = [
    "CAPABILITIES",
    "RELOAD_CAPS",
    "current",
    "drop_capabilities",
    "effective",
    "parse_caps",
    "raise_effective",
]

#: linux/capability.h, by number
CAPABILITIES: dict[str, int] = {
    f"CAP_{name}": number
    for number, name in enumerate(
        (
            "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
            "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
            "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
            "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
            "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
            "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
        )
    )
}

#: What loading and attaching again needs:
#: CAP_BPF: bpf() itself, to create maps and load programs and BTF (5.8+);
#: CAP_PERFMON: to load tracing programs, and perf_event_open() to attach kprobes, uprobes, tracepoints;
#: CAP_NET_ADMIN: to load networking programs and attach them to tc or XDP;
#: CAP_SYS_ADMIN: to mount bpffs and tracefs where missing, to open a pinned map's BTF by id when taking it
#: over (BPF_BTF_GET_FD_BY_ID), and for everything on kernels before 5.8, which have no CAP_BPF or CAP_PERFMON.
#: Not CAP_SYS_RESOURCE: since 5.11 BPF memory is charged to the memory cgroup, and before that libbpf
#: lifts RLIMIT_MEMLOCK at the first load, before the drop, and the limit stays lifted. Not CAP_DAC_*: the
#: agent runs as root, which owns tracefs, bpffs and its pins, so their owner permission bits let it in.
RELOAD_CAPS: frozenset[int] = frozenset(
    CAPABILITIES[name] for name in ("CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN", "CAP_SYS_ADMIN")
)

_NAMES = {number: name for name, number in CAPABILITIES.items()}

_LINUX_CAPABILITY_VERSION_3 = 0x20080522  # two 32-bit words per set
_PR_CAPBSET_READ = 23
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_libc = ctypes.CDLL(None, use_errno=True)
_capget = _libc.capget
_capget.argtypes = [ctypes.POINTER(_Header), ctypes.POINTER(_Data)]
_capget.restype = ctypes.c_int
_capset = _libc.capset
_capset.argtypes = [ctypes.POINTER(_Header), ctypes.POINTER(_Data)]
_capset.restype = ctypes.c_int
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int


def _names(caps: Iterable[int]) -> str:
    return ", ".join(_NAMES.get(cap, f"capability {cap}") for cap in sorted(caps)) or "none"


def _mask(caps: Iterable[int]) -> int:
    return sum(1 << cap for cap in set(caps))


def _caps(mask: int) -> frozenset[int]:
    return frozenset(cap for cap in range(mask.bit_length()) if mask >> cap & 1)


def _get() -> tuple[int, int, int]:
    """The calling thread's (effective, permitted, inheritable) masks."""
    data = (_Data * 2)()
    if _capget(_Header(_LINUX_CAPABILITY_VERSION_3, 0), data) != 0:
        raise SyscallError(ctypes.get_errno(), "capget")
    low, high = data
    return (low.effective | high.effective << 32, low.permitted | high.permitted << 32,
            low.inheritable | high.inheritable << 32)


def _set(effective: int, permitted: int, inheritable: int) -> None:
    data = (_Data * 2)()
    for word in (0, 1):
        data[word].effective = effective >> 32 * word & 0xFFFFFFFF
        data[word].permitted = permitted >> 32 * word & 0xFFFFFFFF
        data[word].inheritable = inheritable >> 32 * word & 0xFFFFFFFF
    if _capset(_Header(_LINUX_CAPABILITY_VERSION_3, 0), data) != 0:
        raise SyscallError(ctypes.get_errno(), "capset")


def _prctl_checked(option: int, arg: int, what: str) -> int:
    ret: int = _prctl(option, arg, 0, 0, 0)
    if ret < 0:
        raise SyscallError(ctypes.get_errno(), what)
    return ret


def parse_caps(text: str) -> frozenset[int]:
    """Capabilities named in a flag's value: "CAP_BPF,CAP_PERFMON", "bpf, perfmon"; "none" or "" for none."""
    if text.strip().lower() == "none":
        return frozenset()
    caps = set()
    for word in filter(None, (part.strip() for part in text.split(","))):
        name = word.upper() if word.upper().startswith("CAP_") else f"CAP_{word.upper()}"
        if name not in CAPABILITIES:
            known = ", ".join(known.lower()[4:] for known in CAPABILITIES)
            raise BpfscopeError(errno.EINVAL, f"unknown capability {word!r} (known: {known})")
        caps.add(CAPABILITIES[name])
    return frozenset(caps)


def drop_capabilities(keep_effective: frozenset[int], keep_permitted: frozenset[int]) -> None:
    """Leaves the calling thread `keep_effective` in effect and `keep_permitted | keep_effective` permitted,
    none inheritable (so none ambient), and drops from the bounding set all that is not permitted where
    it may (that needs CAP_SETPCAP in effect; a container granted only what the agent uses lacks it, and
    no_new_privs below then does the bounding set's job for this process). It cannot be undone, and
    threads started before keep what they had: it refuses (EBUSY) while another Python thread runs, and
    (EPERM) to keep what is not permitted.

    It also sets no_new_privs. The agent never execs, so this costs nothing; should anything in it exec,
    the new program cannot gain privileges through set-user-ID bits, file capabilities or an LSM's domain
    change. (A root process that execs gets its bounding set as permitted and effective: the bounding set
    dropped here is what keeps that to `keep_permitted`.)"""
    permitted = keep_permitted | keep_effective
    eff, have, _ = _get()
    missing = permitted - _caps(have)
    if missing:
        raise BpfscopeError(errno.EPERM, f"cannot keep {_names(missing)}: not permitted to this process "
                                         f"(it has {_names(_caps(have))})")
    native = len(os.listdir("/proc/thread-self/.."))  # every thread of the process, those Python did not start too
    if native > 1:
        raise BpfscopeError(errno.EBUSY, f"drop capabilities before starting threads: each thread has its own, "
                                         f"and the {native - 1} running would keep theirs (numpy's OpenBLAS "
                                         "starts some unless OPENBLAS_NUM_THREADS=1)")
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    bounding = [cap for cap in range(last + 1)
                if cap not in permitted and _prctl_checked(_PR_CAPBSET_READ, cap, "prctl(PR_CAPBSET_READ)")]
    if not eff >> CAPABILITIES["CAP_SETPCAP"] & 1:
        bounding = []
    for cap in bounding:
        _prctl_checked(_PR_CAPBSET_DROP, cap, "prctl(PR_CAPBSET_DROP)")
    _prctl_checked(_PR_SET_NO_NEW_PRIVS, 1, "prctl(PR_SET_NO_NEW_PRIVS)")
    _set(_mask(keep_effective), _mask(permitted), 0)


def raise_effective(caps: frozenset[int]) -> None:
    """Puts `caps` in effect; they must still be permitted."""
    eff, perm, inh = _get()
    missing = caps - _caps(perm)
    if missing:
        raise BpfscopeError(errno.EPERM, f"cannot raise {_names(missing)}: no longer permitted "
                                         "(kept by drop_capabilities only if listed there)")
    _set(eff | _mask(caps), perm, inh)


@contextmanager
def effective(caps: frozenset[int]) -> Iterator[None]:
    """`caps` in effect for the block (the agent's reload), and what was in effect before again after it."""
    before, _, _ = _get()
    raise_effective(caps)
    try:
        yield
    finally:
        _, perm, inh = _get()
        _set(before & perm, perm, inh)


def current() -> dict[str, int]:
    """The calling thread's capability masks from /proc: CapInh, CapPrm, CapEff, CapBnd and CapAmb."""
    with open("/proc/thread-self/status") as f:
        return {key: int(value, 16) for key, _, value in (line.partition(":") for line in f) if key.startswith("Cap")}
