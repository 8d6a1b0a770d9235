"""What this process holds (capabilities, user namespace) and what the kernel restricts all the same
(lockdown, LSMs): the facts behind every "permission denied" bpfscope reports. It only reads files; it
never mounts (mounts.ensure_securityfs does, for doctor), so an error path can use it."""

from __future__ import annotations

import enum
import os
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "SECURITYFS",
    "Capability",
    "KernelRestrictions",
    "effective_capabilities",
    "holders",
    "in_initial_user_namespace",
    "kernel_restrictions",
    "load_needs",
    "missing_capabilities",
    "parse_capabilities",
    "parse_labels",
    "parse_lockdown",
    "parse_lsms",
    "parse_uid_map",
]

# Where lockdown and the LSM list are read; a fresh machine does not mount it.
SECURITYFS = "/sys/kernel/security"


class Capability(enum.IntEnum):
    """Bits of the capability sets in /proc/<pid>/status (linux/capability.h)."""

    DAC_READ_SEARCH = 2
    NET_ADMIN = 12
    SYS_ADMIN = 21
    SYS_RESOURCE = 24
    PERFMON = 38
    BPF = 39

    @property
    def label(self) -> str:
        return f"CAP_{self.name}"


# CAP_SYS_ADMIN still grants what CAP_BPF and CAP_PERFMON split off from it in Linux 5.8.
_SYS_ADMIN_COVERS = frozenset({Capability.BPF, Capability.PERFMON})


def parse_capabilities(mask: str) -> frozenset[Capability]:
    """The known capabilities in a hex mask as /proc/<pid>/status shows it (CapEff: 000001fffeffffff)."""
    bits = int(mask, 16)
    return frozenset(cap for cap in Capability if bits >> cap & 1)


def effective_capabilities() -> frozenset[Capability]:
    """CapEff of the calling thread (capabilities belong to threads; the agent drops them per thread)."""
    path = "/proc/thread-self/status" if os.path.exists("/proc/thread-self") else "/proc/self/status"
    with open(path) as f:
        for line in f:
            if line.startswith("CapEff:"):
                return parse_capabilities(line.split(":", 1)[1].strip())
    return frozenset()


def _granted(cap: Capability, have: frozenset[Capability]) -> bool:
    return cap in have or (cap in _SYS_ADMIN_COVERS and Capability.SYS_ADMIN in have)


def missing_capabilities(
    needed: Iterable[Capability], have: frozenset[Capability] | None = None
) -> list[Capability]:
    """Those of `needed` the process lacks (`have` defaults to its effective set)."""
    have = effective_capabilities() if have is None else have
    return [cap for cap in needed if not _granted(cap, have)]


def holders(needed: Iterable[Capability], have: frozenset[Capability]) -> list[str]:
    """The labels of what in `have` grants `needed`: each capability itself, or CAP_SYS_ADMIN where it
    stands in, so a message never names a capability the process lacks."""
    labels: list[str] = []
    for cap in needed:
        label = cap.label if cap in have else Capability.SYS_ADMIN.label
        if _granted(cap, have) and label not in labels:
            labels.append(label)
    return labels


def parse_labels(text: str) -> tuple[Capability, ...] | None:
    """"CAP_BPF" or "CAP_BPF+CAP_PERFMON" (how errors name what an operation needs); None when a name
    is not a Capability, so nothing can be said about holding it."""
    caps = []
    for label in text.split("+"):
        name = label.strip().removeprefix("CAP_")
        if name not in Capability.__members__:
            return None
        caps.append(Capability[name])
    return tuple(caps)


# enum bpf_prog_type values that kernel/bpf/syscall.c's bpf_prog_load() checks beyond CAP_BPF:
# is_net_admin_prog_type() and is_perfmon_prog_type().
_NET_ADMIN_PROG_TYPES = frozenset({3, 4, 6, 9, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 22, 23, 25, 28})
_PERFMON_PROG_TYPES = frozenset({2, 5, 7, 17, 24, 26, 27, 28, 29})


def load_needs(prog_type: int) -> tuple[Capability, ...]:
    """What loading a program of `prog_type` needs: CAP_BPF, and CAP_NET_ADMIN for networking programs
    or CAP_PERFMON for tracing ones."""
    needs = [Capability.BPF]
    if prog_type in _NET_ADMIN_PROG_TYPES:
        needs.append(Capability.NET_ADMIN)
    if prog_type in _PERFMON_PROG_TYPES:
        needs.append(Capability.PERFMON)
    return tuple(needs)


def parse_uid_map(text: str) -> bool:
    """Whether /proc/<pid>/uid_map is the initial user namespace's (the whole range mapped onto itself)."""
    return text.split() == ["0", "0", "4294967295"]


def in_initial_user_namespace() -> bool:
    """bpf() checks capabilities in the initial user namespace: in any other they do not count."""
    try:
        with open("/proc/self/uid_map") as f:
            return parse_uid_map(f.read())
    except OSError:
        return True  # no user namespaces in this kernel


def parse_lockdown(text: str) -> str:
    """The active mode in <securityfs>/lockdown ("none [integrity] confidentiality")."""
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return text.strip()


def parse_lsms(text: str) -> tuple[str, ...]:
    """The active LSMs in <securityfs>/lsm ("lockdown,capability,landlock,bpf"), in the kernel's order."""
    return tuple(name for name in text.strip().split(",") if name)


@dataclass(frozen=True)
class KernelRestrictions:
    """What securityfs says; None where it could not be read (securityfs not mounted, or no such LSM)."""

    lockdown: str | None
    lsms: tuple[str, ...] | None

    def suspects(self) -> str:
        """What may refuse an operation the process holds the capabilities for, naming what is known:
        "lockdown (integrity), an LSM (landlock, bpf) or a build option"."""
        found = []
        if self.lockdown is None:
            found.append("lockdown")
        elif self.lockdown != "none":
            found.append(f"lockdown ({self.lockdown})")
        # "capability" is the check the process passed and "lockdown" is named above
        others = None if self.lsms is None else [lsm for lsm in self.lsms if lsm not in ("capability", "lockdown")]
        if others is None:
            found.append("an LSM")
        elif others:
            found.append(f"an LSM ({', '.join(others)})")
        found.append("a build option")
        return ", ".join(found[:-1]) + f" or {found[-1]}" if len(found) > 1 else found[0]


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def kernel_restrictions(securityfs: str = SECURITYFS) -> KernelRestrictions:
    """Lockdown mode and active LSMs from `securityfs`, as far as it is mounted and readable."""
    lockdown, lsms = _read(os.path.join(securityfs, "lockdown")), _read(os.path.join(securityfs, "lsm"))
    return KernelRestrictions(
        None if lockdown is None else parse_lockdown(lockdown), None if lsms is None else parse_lsms(lsms)
    )

