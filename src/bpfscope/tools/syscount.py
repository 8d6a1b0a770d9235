"""The syscall counter: loads syscount.bpf.o with its filters frozen in .rodata, attaches it to the
raw_syscalls tracepoints and reads the per-CPU counters it keeps by (process or cgroup, syscall
number, errno), with the time the calls took, in one batch per read. Numbers are named from this
architecture's syscall table, errnos from the C library's names and the kernel's own."""

from __future__ import annotations

import errno
import platform
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional

import numpy as np

from ..features import Feature, require
from ..mounts import ensure_tracefs
from ..object import ObjectSpec, tool_object
from ._base import (
    CGROUP,
    COMM,
    COMM_BYTES,
    DURATION,
    INTERVAL,
    JSON,
    PID,
    TRACE,
    Kind,
    Option,
    OptionValueError,
    Tool,
    check_pid,
)

if TYPE_CHECKING:
    from prometheus_client.core import Metric

__all__ = ["Owner", "Snapshot", "SyscallCounter", "Totals", "TOOL", "errno_name", "syscall_names"]

DEFAULT_MAX_KEYS = 10240
_MAX_KEYS_LIMIT = 1 << 20

# The syscall tables, by number from 0, "-" where no syscall has that number: transcribed from the
# kernel's own tables, arch/x86/entry/syscalls/syscall_64.tbl (abis common and 64) and, for arm64,
# scripts/syscall.tbl (abis common, 64, renameat, rlimit, memfd_secret, as arch/arm64/kernel/
# Makefile.syscalls takes them), of Linux 6.19. Numbers are never reused, so a table this new names the
# calls of every older kernel; a newer kernel's new calls show as numbers. Since 424 every
# architecture numbers new calls alike.
_X86_64 = """
read write open close stat fstat lstat poll lseek mmap mprotect munmap brk rt_sigaction rt_sigprocmask
rt_sigreturn ioctl pread64 pwrite64 readv writev access pipe select sched_yield mremap msync mincore madvise
shmget shmat shmctl dup dup2 pause nanosleep getitimer alarm setitimer getpid sendfile socket connect accept
sendto recvfrom sendmsg recvmsg shutdown bind listen getsockname getpeername socketpair setsockopt getsockopt
clone fork vfork execve exit wait4 kill uname semget semop semctl shmdt msgget msgsnd msgrcv msgctl fcntl flock
fsync fdatasync truncate ftruncate getdents getcwd chdir fchdir rename mkdir rmdir creat link unlink symlink
readlink chmod fchmod chown fchown lchown umask gettimeofday getrlimit getrusage sysinfo times ptrace getuid
syslog getgid setuid setgid geteuid getegid setpgid getppid getpgrp setsid setreuid setregid getgroups setgroups
setresuid getresuid setresgid getresgid getpgid setfsuid setfsgid getsid capget capset rt_sigpending
rt_sigtimedwait rt_sigqueueinfo rt_sigsuspend sigaltstack utime mknod uselib personality ustat statfs fstatfs
sysfs getpriority setpriority sched_setparam sched_getparam sched_setscheduler sched_getscheduler
sched_get_priority_max sched_get_priority_min sched_rr_get_interval mlock munlock mlockall munlockall vhangup
modify_ldt pivot_root _sysctl prctl arch_prctl adjtimex setrlimit chroot sync acct settimeofday mount umount2
swapon swapoff reboot sethostname setdomainname iopl ioperm create_module init_module delete_module
get_kernel_syms query_module quotactl nfsservctl getpmsg putpmsg afs_syscall tuxcall security gettid readahead
setxattr lsetxattr fsetxattr getxattr lgetxattr fgetxattr listxattr llistxattr flistxattr removexattr
lremovexattr fremovexattr tkill time futex sched_setaffinity sched_getaffinity set_thread_area io_setup
io_destroy io_getevents io_submit io_cancel get_thread_area lookup_dcookie epoll_create epoll_ctl_old
epoll_wait_old remap_file_pages getdents64 set_tid_address restart_syscall semtimedop fadvise64 timer_create
timer_settime timer_gettime timer_getoverrun timer_delete clock_settime clock_gettime clock_getres
clock_nanosleep exit_group epoll_wait epoll_ctl tgkill utimes vserver mbind set_mempolicy get_mempolicy mq_open
mq_unlink mq_timedsend mq_timedreceive mq_notify mq_getsetattr kexec_load waitid add_key request_key keyctl
ioprio_set ioprio_get inotify_init inotify_add_watch inotify_rm_watch migrate_pages openat mkdirat mknodat
fchownat futimesat newfstatat unlinkat renameat linkat symlinkat readlinkat fchmodat faccessat pselect6 ppoll
unshare set_robust_list get_robust_list splice tee sync_file_range vmsplice move_pages utimensat epoll_pwait
signalfd timerfd_create eventfd fallocate timerfd_settime timerfd_gettime accept4 signalfd4 eventfd2
epoll_create1 dup3 pipe2 inotify_init1 preadv pwritev rt_tgsigqueueinfo perf_event_open recvmmsg fanotify_init
fanotify_mark prlimit64 name_to_handle_at open_by_handle_at clock_adjtime syncfs sendmmsg setns getcpu
process_vm_readv process_vm_writev kcmp finit_module sched_setattr sched_getattr renameat2 seccomp getrandom
memfd_create kexec_file_load bpf execveat userfaultfd membarrier mlock2 copy_file_range preadv2 pwritev2
pkey_mprotect pkey_alloc pkey_free statx io_pgetevents rseq uretprobe uprobe
"""
_ARM64 = """
io_setup io_destroy io_submit io_cancel io_getevents setxattr lsetxattr fsetxattr getxattr lgetxattr fgetxattr
listxattr llistxattr flistxattr removexattr lremovexattr fremovexattr getcwd lookup_dcookie eventfd2
epoll_create1 epoll_ctl epoll_pwait dup dup3 fcntl inotify_init1 inotify_add_watch inotify_rm_watch ioctl
ioprio_set ioprio_get flock mknodat mkdirat unlinkat symlinkat linkat renameat umount2 mount pivot_root
nfsservctl statfs fstatfs truncate ftruncate fallocate faccessat chdir fchdir chroot fchmod fchmodat fchownat
fchown openat close vhangup pipe2 quotactl getdents64 lseek read write readv writev pread64 pwrite64 preadv
pwritev sendfile pselect6 ppoll signalfd4 vmsplice splice tee readlinkat newfstatat fstat sync fsync fdatasync
sync_file_range timerfd_create timerfd_settime timerfd_gettime utimensat acct capget capset personality exit
exit_group waitid set_tid_address unshare futex set_robust_list get_robust_list nanosleep getitimer setitimer
kexec_load init_module delete_module timer_create timer_gettime timer_getoverrun timer_settime timer_delete
clock_settime clock_gettime clock_getres clock_nanosleep syslog ptrace sched_setparam sched_setscheduler
sched_getscheduler sched_getparam sched_setaffinity sched_getaffinity sched_yield sched_get_priority_max
sched_get_priority_min sched_rr_get_interval restart_syscall kill tkill tgkill sigaltstack rt_sigsuspend
rt_sigaction rt_sigprocmask rt_sigpending rt_sigtimedwait rt_sigqueueinfo rt_sigreturn setpriority getpriority
reboot setregid setgid setreuid setuid setresuid getresuid setresgid getresgid setfsuid setfsgid times setpgid
getpgid getsid setsid getgroups setgroups uname sethostname setdomainname getrlimit setrlimit getrusage umask
prctl getcpu gettimeofday settimeofday adjtimex getpid getppid getuid geteuid getgid getegid gettid sysinfo
mq_open mq_unlink mq_timedsend mq_timedreceive mq_notify mq_getsetattr msgget msgctl msgrcv msgsnd semget semctl
semtimedop semop shmget shmctl shmat shmdt socket socketpair bind listen accept connect getsockname getpeername
sendto recvfrom setsockopt getsockopt shutdown sendmsg recvmsg readahead brk munmap mremap add_key request_key
keyctl clone execve mmap fadvise64 swapon swapoff mprotect msync mlock munlock mlockall munlockall mincore
madvise remap_file_pages mbind get_mempolicy set_mempolicy migrate_pages move_pages rt_tgsigqueueinfo
perf_event_open accept4 recvmmsg - - - - - - - - - - - - - - - - wait4 prlimit64 fanotify_init fanotify_mark
name_to_handle_at open_by_handle_at clock_adjtime syncfs setns sendmmsg process_vm_readv process_vm_writev kcmp
finit_module sched_setattr sched_getattr renameat2 seccomp getrandom memfd_create bpf execveat userfaultfd
membarrier mlock2 copy_file_range preadv2 pwritev2 pkey_mprotect pkey_alloc pkey_free statx io_pgetevents rseq
kexec_file_load
"""
_FROM_424 = """
pidfd_send_signal io_uring_setup io_uring_enter io_uring_register open_tree move_mount fsopen fsconfig fsmount
fspick pidfd_open clone3 close_range openat2 pidfd_getfd faccessat2 process_madvise epoll_pwait2 mount_setattr
quotactl_fd landlock_create_ruleset landlock_add_rule landlock_restrict_self memfd_secret process_mrelease
futex_waitv set_mempolicy_home_node cachestat fchmodat2 map_shadow_stack futex_wake futex_wait futex_requeue
statmount listmount lsm_get_self_attr lsm_set_self_attr lsm_list_modules mseal setxattrat getxattrat listxattrat
removexattrat open_tree_attr file_getattr file_setattr listns
"""
_TABLES = {"x86_64": _X86_64, "aarch64": _ARM64}

# What a syscall can return to the exit tracepoint before the kernel's signal code turns it into
# something else (include/linux/errno.h: never seen by user space, so the C library has no names).
_KERNEL_ERRNOS = {
    512: "ERESTARTSYS", 513: "ERESTARTNOINTR", 514: "ERESTARTNOHAND", 515: "ENOIOCTLCMD",
    516: "ERESTART_RESTARTBLOCK", 517: "EPROBE_DEFER", 518: "EOPENSTALE", 519: "ENOPARAM", 521: "EBADHANDLE",
    522: "ENOTSYNC", 523: "EBADCOOKIE", 524: "ENOTSUPP", 525: "ETOOSMALL", 526: "ESERVERFAULT", 527: "EBADTYPE",
    528: "EJUKEBOX", 529: "EIOCBQUEUED", 530: "ERECALLCONFLICT", 531: "ENOGRACE",
}


def syscall_names(machine: Optional[str] = None) -> dict[int, str]:
    """Syscall numbers to names for `machine` (platform.machine(): x86_64, aarch64); empty for another."""
    head = _TABLES.get(machine or platform.machine())
    if head is None:
        return {}
    names = {nr: name for nr, name in enumerate(head.split()) if name != "-"}
    names.update(enumerate(_FROM_424.split(), start=424))
    return names


def errno_name(number: int) -> str:
    """ENOENT for 2; the kernel's own names above 511; the number itself where nothing names it."""
    return errno.errorcode.get(number) or _KERNEL_ERRNOS.get(number) or str(number)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise OptionValueError(f"{text!r} is not a whole number") from None
    if not 0 < value <= _MAX_KEYS_LIMIT:
        raise OptionValueError(f"{text!r} must be between 1 and {_MAX_KEYS_LIMIT:,}")
    return value


@dataclass(frozen=True)
class Totals:
    """Calls and the time they took; `timed` of them (those whose entry was seen) were timed."""

    calls: int = 0
    errors: int = 0
    timed: int = 0
    total_ns: int = 0
    max_ns: int = 0  # since the programs were attached: a difference keeps the later one's

    def __add__(self, other: Totals) -> Totals:
        return Totals(self.calls + other.calls, self.errors + other.errors, self.timed + other.timed,
                      self.total_ns + other.total_ns, max(self.max_ns, other.max_ns))

    def __sub__(self, earlier: Totals) -> Totals:
        return Totals(self.calls - earlier.calls, self.errors - earlier.errors, self.timed - earlier.timed,
                      self.total_ns - earlier.total_ns, self.max_ns)

    @property
    def avg_ns(self) -> Optional[int]:
        return self.total_ns // self.timed if self.timed else None

    def as_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "errors": self.errors, "total_ns": self.total_ns, "avg_ns": self.avg_ns,
                "max_ns": self.max_ns}


@dataclass(frozen=True)
class Owner:
    """Whose calls: a process (its pid) or a cgroup (its id), with the comm last seen making a call."""

    id: int
    comm: str


_Key = tuple[int, int, int]  # (owner, syscall number, errno or 0)


@dataclass(frozen=True)
class Snapshot:
    """The kernel's counters at one time, by (owner, syscall number, errno); `names` the table."""

    time: float
    counts: dict[_Key, Totals] = field(default_factory=dict)
    comms: dict[int, str] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)

    def __sub__(self, earlier: Snapshot) -> Snapshot:
        zero = Totals()
        delta = {key: now - earlier.counts.get(key, zero) for key, now in self.counts.items()}
        return Snapshot(self.time - earlier.time, {k: v for k, v in delta.items() if v.calls}, self.comms, self.names)

    def name(self, nr: int) -> str:
        return self.names.get(nr, f"syscall_{nr}")

    @property
    def total(self) -> Totals:
        return sum(self.counts.values(), Totals())

    def by_syscall(self) -> dict[str, Totals]:
        """Every owner's calls added up by syscall, most calls first."""
        return self._ranked((self.name(nr), totals) for (_, nr, _), totals in self.counts.items())

    def by_owner(self) -> dict[Owner, Totals]:
        """Every syscall added up by owner, most calls first."""
        return self._ranked((Owner(owner, self.comms.get(owner, "")), totals)
                            for (owner, _, _), totals in self.counts.items())

    def syscalls_of(self, owner: int) -> dict[str, Totals]:
        return self._ranked((self.name(nr), t) for (who, nr, _), t in self.counts.items() if who == owner)

    def errors(self, owner: Optional[int] = None) -> dict[str, dict[str, int]]:
        """Failed calls by syscall and errno name (of one owner, or all), most first."""
        table: dict[str, dict[str, int]] = {}
        for (who, nr, err), totals in sorted(self.counts.items(), key=lambda item: -item[1].calls):
            if err and (owner is None or who == owner):
                by_errno = table.setdefault(self.name(nr), {})
                by_errno[errno_name(err)] = by_errno.get(errno_name(err), 0) + totals.calls
        return table

    @staticmethod
    def _ranked(rows: Iterator[tuple[Any, Totals]]) -> dict[Any, Totals]:
        added: dict[Any, Totals] = {}
        for key, totals in rows:
            added[key] = added.get(key, Totals()) + totals
        return dict(sorted(added.items(), key=lambda item: (-item[1].calls, str(item[0]))))


class SyscallCounter(Tool):
    """`with SyscallCounter(pid=...) as counter: counter.snapshot()`: syscalls counted in the kernel
    by process (or cgroup), number and errno, timed from entry to exit unless `latency=False`."""

    NAME = "syscount"
    HELP = "count syscalls by name and by process: calls, errors by errno, latency (raw_syscalls tracepoints)"
    NEEDS = (("tracepoints",), ("tracefs",), ("task_storage",))
    CAPABILITIES = TRACE
    KIND = Kind.POLLING
    OPTIONS = (
        PID,
        COMM,
        CGROUP,
        Option("per", "count by process or by cgroup (default: process)", str, default="process",
               choices=("process", "cgroup"), agent=False),
        Option("latency", "time each call from entry to exit (--no-latency: count at exit only, half the cost)",
               default=True),
        Option("top", "rows of each table shown (default: 20)", _count, default=20, metavar="N", agent=False),
        Option("max_keys", f"counters the kernel keeps, one per (process, syscall, errno) (default: "
               f"{DEFAULT_MAX_KEYS:,}); calls past them are counted as lost", _count, default=DEFAULT_MAX_KEYS,
               metavar="N", hidden=True),
        INTERVAL,
        DURATION,
        JSON.but(help="one JSON object per interval (what it counted) and a final one (all of it)"),
    )
    AGENT_KEY = "syscalls"
    AGENT_VALUES = {"per": "cgroup"}  # containers as labels, and a bounded key set on a node of many processes

    def __init__(self, *, pid: Optional[int] = None, comm: Optional[str] = None, cgroup_id: Optional[int] = None,
                 per_cgroup: bool = False, latency: bool = True, top: int = 20, max_keys: int = DEFAULT_MAX_KEYS,
                 pin_dir: Optional[str] = None) -> None:
        super().__init__(pin_dir=pin_dir)  # counters pinned there carry on from an earlier run
        self.pid = pid
        self.comm = comm
        self.cgroup_id = cgroup_id
        self.per_cgroup = per_cgroup
        self.latency = latency
        self.top = top
        self.max_keys = max_keys
        self.names = syscall_names()

    @classmethod
    def _from_options(cls, values: Mapping[str, Any], pin_dir: Optional[str]) -> SyscallCounter:
        return cls(pid=values["pid"], comm=values["comm"], cgroup_id=values["cgroup"],
                   per_cgroup=values["per"] == "cgroup", latency=values["latency"], top=values["top"],
                   max_keys=values["max_keys"], pin_dir=pin_dir)

    def _open(self) -> None:
        if self.pid is not None:
            check_pid(self.pid)  # an unknown pid stops here, before anything is loaded
        require(Feature.TASK_STORAGE)  # each call's entry time: one line on a kernel without it (before 5.11)
        ensure_tracefs()  # where libbpf finds the tracepoints' ids
        spec = ObjectSpec.open(tool_object("syscount"))
        rodata = spec.rodata
        if self.pid is not None:
            rodata["cfg_tgid"] = self.pid
        if self.cgroup_id is not None:
            rodata["cfg_cgroup_id"] = self.cgroup_id
        if self.comm is not None:
            words = np.frombuffer(self.comm.encode().ljust(COMM_BYTES, b"\0"), dtype=np.uint64)
            rodata["cfg_comm"] = tuple(int(w) for w in words)
            rodata["cfg_filter_comm"] = True
        rodata["cfg_latency"] = self.latency
        rodata["cfg_per_cgroup"] = self.per_cgroup
        spec.programs["enter_syscall"].autoload = self.latency
        spec.maps["calls"].max_entries = spec.maps["comms"].max_entries = self.max_keys
        spec.pin_maps(self.pin_dir, ["calls", "comms", "calls_lost"])
        self._obj = obj = spec.load()
        for program in ("enter_syscall", "exit_syscall") if self.latency else ("exit_syscall",):
            self.attach(obj.programs[program].attach())

    @property
    def lost(self) -> int:
        """Calls not counted because the counters map was full."""
        return sum(int(v) for v in self.obj.maps["calls_lost"].lookup(0))

    def snapshot(self) -> Snapshot:
        now = time.monotonic()
        keys, values = self.obj.maps["calls"].lookup_batch()  # values: [keys, cpus]
        calls, timed, total = (values[column].sum(axis=1).tolist() for column in ("calls", "timed", "total_ns"))
        longest = values["max_ns"].max(axis=1).tolist() if len(values) else []
        counts = {
            (owner, nr, err): Totals(n, n if err else 0, t, ns, most)
            for owner, nr, err, n, t, ns, most in zip(keys["owner"].tolist(), keys["nr"].tolist(),
                                                      keys["err"].tolist(), calls, timed, total, longest)
        }
        comm_keys, comm_values = self.obj.maps["comms"].lookup_batch()
        comms = {int(k): bytes(v).rstrip(b"\0").decode("utf-8", "backslashreplace")
                 for k, v in zip(comm_keys.tolist(), comm_values.tolist())}
        return Snapshot(now, counts, comms, self.names)

    def as_dict(self, snap: Snapshot) -> dict[str, Any]:
        """A JSON-ready view of what `snap` counted: totals, by syscall (with errors by errno), by
        process or cgroup (with its syscalls and errors)."""
        owner_key = "cgroup_id" if self.per_cgroup else "pid"
        errors = snap.errors()
        by_owner = []
        for owner, totals in snap.by_owner().items():
            own_errors = snap.errors(owner.id)
            by_owner.append({owner_key: owner.id, "comm": owner.comm, **totals.as_dict(), "syscalls": {
                name: {**t.as_dict(), "errnos": own_errors.get(name, {})}
                for name, t in snap.syscalls_of(owner.id).items()}})
        return {
            **snap.total.as_dict(),
            "by_syscall": [{"syscall": name, **totals.as_dict(), "errnos": errors.get(name, {})}
                           for name, totals in snap.by_syscall().items()],
            "by_cgroup" if self.per_cgroup else "by_process": by_owner,
        }

    def metrics(self) -> Iterator[Metric]:
        """Calls, errors (by errno) and the seconds they took, by syscall and container. Bounded: syscall
        names by the architecture's table, errnos by the kernel's, containers by the agent's resolver."""
        from prometheus_client.core import CounterMetricFamily

        snap = self._prune(self.snapshot())
        calls: dict[tuple[str, ...], int] = {}
        errors: dict[tuple[str, ...], int] = {}
        seconds: dict[tuple[str, ...], int] = {}
        for (owner, nr, err), totals in snap.counts.items():
            where = self._container_labels(owner) if self.per_cgroup else ("", "")
            key = (snap.name(nr), *where)
            calls[key] = calls.get(key, 0) + totals.calls
            seconds[key] = seconds.get(key, 0) + totals.total_ns
            if err:
                failed = (snap.name(nr), errno_name(err), *where)
                errors[failed] = errors.get(failed, 0) + totals.calls
        families = (
            (CounterMetricFamily("bpfscope_syscalls", "System calls made, by syscall and container",
                                 labels=["syscall", "container", "pod"]), calls, 1),
            (CounterMetricFamily("bpfscope_syscall_errors", "System calls that returned an error, by syscall, "
                                 "errno and container", labels=["syscall", "errno", "container", "pod"]), errors, 1),
            (CounterMetricFamily("bpfscope_syscall_seconds", "Time spent in system calls (entry to exit), by "
                                 "syscall and container", labels=["syscall", "container", "pod"]), seconds, 1e-9),
        )
        for family, table, scale in families:
            for labels, value in sorted(table.items()):
                family.add_metric(list(labels), value * scale)
            yield family

    def _prune(self, snap: Snapshot) -> Snapshot:
        """In the agent, with the counters nine tenths full, the counters of cgroups that no longer exist
        (containers gone) are deleted, so that a node of many short-lived containers keeps counting new
        ones: their series end, as a finished container's do."""
        if not self.per_cgroup or self.containers is None or len(snap.counts) < self.max_keys * 9 // 10:
            return snap
        alive = self.containers.exists({owner for owner, _, _ in snap.counts})
        gone = [key for key in snap.counts if not alive[key[0]]]
        if gone:
            self.obj.maps["calls"].delete_batch([{"owner": o, "nr": nr, "err": err} for o, nr, err in gone])
            for owner in {o for o, _, _ in gone}:
                self.obj.maps["comms"].delete(owner)
        kept = {key: totals for key, totals in snap.counts.items() if alive[key[0]]}
        return Snapshot(snap.time, kept, snap.comms, snap.names)

    def _container_labels(self, cgroup_id: int) -> tuple[str, str]:
        if self.containers is None:
            return ("", "")
        return self.containers.labels(cgroup_id)


TOOL = SyscallCounter

