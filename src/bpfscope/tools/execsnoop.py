"""The exec tracer: loads execsnoop.bpf.o with its filters and caps frozen in .rodata, attaches it
to the execve and execveat syscall tracepoints and sched_process_exec, and turns the records it
streams through its ring buffer into `Exec`s. The filters run in the kernel: an exec they reject is
never copied, let alone sent.

A failed exec has no sched_process_exec and returns to the caller: its event carries the error
and the caller's comm. A successful one returns in the new program, so its comm is the new one.

In the agent it counts execs per comm and cgroup in the kernel instead, and exports them labelled by
container."""

from __future__ import annotations

import errno
import os
import pwd
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional

from ..errors import BpfscopeError
from ..mounts import ensure_tracefs
from ..object import ObjectSpec, tool_object
from ..ringbuf import RingBuffer
from ._base import (
    CGROUP,
    COMM,
    COMM_BYTES,
    DURATION,
    INTERVAL,
    JSON,
    RING_BYTES,
    TRACE,
    Kind,
    Option,
    OptionValueError,
    Tool,
    pid_number,
)

if TYPE_CHECKING:
    from prometheus_client.core import Metric

__all__ = ["ARG_BYTES", "COMM_BYTES", "MAX_ARGS", "TOOL", "Exec", "ExecCount", "ExecSnoop", "Filters", "Limits",
           "errno_name"]

MAX_ARGS = 20  # MAX_ARGS and ARG_BYTES in execsnoop.bpf.c
ARG_BYTES = 128
DEFAULT_RING_BYTES = 1 << 20

# (category, tracepoint, program, required): the execve ones are required, the others used where they exist.
_HOOKS = (
    ("syscalls", "sys_enter_execve", "stash_execve", True),
    ("syscalls", "sys_exit_execve", "report_execve", True),
    ("syscalls", "sys_enter_execveat", "stash_execveat", False),
    ("syscalls", "sys_exit_execveat", "report_execveat", False),
    ("sched", "sched_process_exec", "rekey_exec", False),  # only for execs from non-leader threads
)

# enum exec_flags
_MORE_ARGS = 1
_PATH_CUT = 2
_ARGS_UNREADABLE = 4


@dataclass(frozen=True)
class Filters:
    """Which execs to report; all given ones must hold. Decided in the kernel at the syscall's
    entry, except `failed_only`, which needs the result."""

    uid: Optional[int] = None
    ppid: Optional[int] = None
    cgroup_id: Optional[int] = None
    # The comm the exec gives its process, exactly: the last component of the path executed, cut at 15
    # bytes; a failed exec is matched by the comm it would have given.
    comm: Optional[str] = None
    failed_only: bool = False

    def check(self) -> None:
        """Raises BpfscopeError (EINVAL) for a filter that no exec can pass."""
        if self.comm is not None and "/" in self.comm:
            raise BpfscopeError(errno.EINVAL, f"comm {self.comm!r} matches no exec: an exec's comm is the last "
                                "component of the path executed, without '/'")

    def describe(self) -> str:
        parts = []
        if self.comm is not None:
            parts.append(f"comm {self.comm}")
        if self.uid is not None:
            parts.append(f"uid {self.uid}")
        if self.ppid is not None:
            parts.append(f"ppid {self.ppid}")
        if self.cgroup_id is not None:
            parts.append(f"cgroup {self.cgroup_id}")
        if self.failed_only:
            parts.append("failed only")
        return ", ".join(parts) or "all"


@dataclass(frozen=True)
class Limits:
    """How much of argv an event carries: at most `max_args` arguments of at most `arg_bytes` - 1
    bytes each; what is cut is marked."""

    max_args: int = MAX_ARGS
    arg_bytes: int = ARG_BYTES

    def __post_init__(self) -> None:
        if not 1 <= self.max_args <= MAX_ARGS:
            raise BpfscopeError(errno.EINVAL, f"max_args must be from 1 to {MAX_ARGS}, not {self.max_args}")
        if not 2 <= self.arg_bytes <= ARG_BYTES:
            raise BpfscopeError(errno.EINVAL, f"arg_bytes must be from 2 to {ARG_BYTES}, not {self.arg_bytes}")


def _whole(text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise OptionValueError(f"{text!r} is not a whole number") from None
    if not low <= value <= high:
        raise OptionValueError(f"{text!r} must be from {low} to {high}")
    return value


def user_id(text: str) -> int:
    """A uid, or a user name from the password database."""
    if text.isdigit():
        return _whole(text, 0, 2**32 - 2)  # (uid_t)-1 is no uid
    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        raise OptionValueError(f"no user {text!r} (give a name or a number)") from None


def max_args(text: str) -> int:
    return _whole(text, 1, MAX_ARGS)


def arg_bytes(text: str) -> int:
    return _whole(text, 2, ARG_BYTES)


def errno_name(ret: int) -> str:
    """"ENOENT" for -2; "0" for success."""
    if ret >= 0:
        return str(ret)
    return errno.errorcode.get(-ret, str(ret))


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class Exec:
    time: float  # wall clock, at the syscall's return
    pid: int
    ppid: int
    uid: int
    cgroup_id: int
    comm: str
    syscall: str  # execve or execveat
    path: str
    argv: tuple[str, ...]
    ret: int  # 0, or -errno
    cut_args: tuple[int, ...] = ()  # indexes into argv of arguments cut at the byte cap
    more_args: bool = False  # argv went on past the argument cap
    path_cut: bool = False
    args_unreadable: bool = False  # argv (or an argument) was not in memory: what was read is argv

    @property
    def failed(self) -> bool:
        return self.ret < 0

    @property
    def error(self) -> Optional[str]:
        return errno_name(self.ret) if self.ret < 0 else None

    def command_line(self) -> str:
        """The path and the arguments after argv[0], as a shell would take them; a cut argument
        ends in "…", and "…" after the last says there were more."""
        # execveat(fd, "", ..., AT_EMPTY_PATH), as fexecve does, names no path: argv[0] stands in.
        path = self.path or (self.argv[0] if self.argv else "")
        words = [_quote(path) + ("…" if self.path_cut else "")]
        for i, arg in enumerate(self.argv[1:], start=1):
            words.append(_quote(arg) + ("…" if i in self.cut_args else ""))
        if self.more_args:
            words.append("…")
        if self.args_unreadable:
            words.append("[argv unreadable]")
        return " ".join(words)

    def as_dict(self) -> dict[str, Any]:
        return {"time": round(self.time, 6), "pid": self.pid, "ppid": self.ppid, "uid": self.uid,
                "cgroup_id": self.cgroup_id, "comm": self.comm, "syscall": self.syscall, "path": self.path,
                "argv": list(self.argv), "ret": self.ret, "error": self.error, "cut_args": list(self.cut_args),
                "more_args": self.more_args, "path_cut": self.path_cut, "args_unreadable": self.args_unreadable}


_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./-_")


def _quote(word: str) -> str:
    if word and all(c in _SAFE for c in word):
        return word
    return "'" + word.replace("'", "'\"'\"'") + "'"


@dataclass(frozen=True)
class ExecCount:
    comm: str
    cgroup_id: int
    execs: int
    failures: int


class ExecSnoop(Tool):
    """`with ExecSnoop(filters=Filters(comm="curl")) as snoop: snoop.poll()`; detaches on exit. With
    `count=True` nothing is streamed: `counts()` reads the counts per comm and cgroup.

    `lost` counts the execs that passed the filters but could not be reported: the ring was full, more
    execs were in flight at once than the stash holds, or (count mode) the counters map was full."""

    NAME = "execsnoop"
    HELP = "trace new programs: pid, ppid, uid, arguments, result (tracepoints)"
    NEEDS = (("tracepoints",), ("tracefs",), ("ringbuf",))
    CAPABILITIES = TRACE
    KIND = Kind.STREAMING
    OPTIONS = (
        COMM.but(help=f"only execs whose comm is exactly NAME: the last component of the path executed, as the "
                 f"kernel names the process (at most {COMM_BYTES - 1} bytes)", aliases=("--name",)),
        Option("uid", "only execs by this user (name or uid)", user_id, metavar="USER"),
        Option("ppid", "only execs by children of process PID", pid_number, metavar="PID"),
        CGROUP.but(help="only execs in the cgroup v2 at PATH (under its mount, or as /proc/PID/cgroup shows it)"),
        Option("failed", "only execs that failed"),
        Option("max_args", f"arguments kept per exec; more are marked with … (default and most: {MAX_ARGS})",
               max_args, default=MAX_ARGS, metavar="N", agent=False),
        Option("arg_bytes", f"bytes kept per argument, the NUL included; a longer one ends in … (default and most: "
               f"{ARG_BYTES})", arg_bytes, default=ARG_BYTES, metavar="N", agent=False),
        Option("count", "count execs per comm and cgroup in the kernel; stream nothing", cli=False, agent=False),
        INTERVAL.but(default=0.5, help="seconds between refreshes of the live view (default: 0.5)"),
        DURATION,
        JSON.but(help="one JSON object per exec, and a final summary"),
        RING_BYTES.but(default=DEFAULT_RING_BYTES),
    )
    AGENT_KEY = "execs"
    AGENT_VALUES = {"count": True}  # execs per comm and container, counted in the kernel

    def __init__(
        self, *, filters: Filters = Filters(), limits: Limits = Limits(), ring_bytes: int = DEFAULT_RING_BYTES,
        count: bool = False, pin_dir: Optional[str] = None, max_counts: int = 10240,
    ) -> None:
        super().__init__(pin_dir=pin_dir)  # counters pinned there carry on from an earlier run
        self.count = count
        self.max_counts = max_counts  # (comm, cgroup) pairs the count map holds
        self.filters = filters
        self.limits = limits
        self.ring_bytes = ring_bytes
        self._syscalls: dict[int, str] = {}
        self._clock_offset_ns = 0
        self.hooks: tuple[str, ...] = ()  # the tracepoints attached, as category:name
        self._events: Optional[RingBuffer] = None
        # A cgroup's container labels once known, kept after its container is gone (and the resolver
        # forgets it), so its counts stay in the same series rather than moving to the host's.
        self._labels: dict[int, tuple[str, str]] = {}

    @classmethod
    def _from_options(cls, values: Mapping[str, Any], pin_dir: Optional[str]) -> ExecSnoop:
        filters = Filters(uid=values["uid"], ppid=values["ppid"], cgroup_id=values["cgroup"], comm=values["comm"],
                          failed_only=values["failed"])
        return cls(filters=filters, limits=Limits(values["max_args"], values["arg_bytes"]),
                   ring_bytes=values["ring_bytes"], count=values["count"], pin_dir=pin_dir)

    @property
    def kind(self) -> Kind:
        return Kind.POLLING if self.count else Kind.STREAMING

    def _open(self) -> None:
        """Checks the filters, loads with them written and attaches to every tracepoint this kernel has."""
        self.filters.check()
        tracefs = ensure_tracefs()
        present = {program: os.path.isdir(os.path.join(tracefs, "events", category, name))
                   for category, name, program, _ in _HOOKS}
        spec = ObjectSpec.open(tool_object("execsnoop"))
        self._configure(spec)
        spec.pin_maps(self.pin_dir, ["counts", "events_lost"])
        for _, _, program, required in _HOOKS:
            if not present[program] and not required:
                spec.programs[program].autoload = False  # required ones fail at attach, naming the tracepoint
        self._obj = obj = spec.load()
        syscalls = obj.exported_type("syscall").python_type  # enum exec_syscall: SYSCALL_EXECVE = 0
        self._syscalls = {int(s): s.name[len("SYSCALL_"):].lower() for s in syscalls}
        if not self.count:
            self._events = self.ring(obj.ring_buffer("events"))
        hooks = []
        for category, name, program, _ in _HOOKS:
            if program in obj.programs:
                self.attach(obj.programs[program].attach_tracepoint(category, name))
                hooks.append(f"{category}:{name}")
        self.hooks = tuple(hooks)
        self._clock_offset_ns = time.time_ns() - time.clock_gettime_ns(time.CLOCK_MONOTONIC)

    def _configure(self, spec: ObjectSpec) -> None:
        f, rodata = self.filters, spec.rodata
        if f.uid is not None:
            rodata["cfg_uid"] = f.uid
        if f.ppid is not None:
            rodata["cfg_ppid"] = f.ppid
        if f.cgroup_id is not None:
            rodata["cfg_cgroup_id"] = f.cgroup_id
        if f.comm is not None:
            rodata["cfg_name"] = f.comm.encode()
        rodata["cfg_failed_only"] = f.failed_only
        rodata["cfg_max_args"] = self.limits.max_args
        rodata["cfg_arg_bytes"] = self.limits.arg_bytes
        rodata["cfg_count"] = self.count
        spec.maps["counts"].max_entries = self.max_counts
        spec.maps["events"].max_entries = self.ring_bytes if not self.count else 4096

    # --- reading ---

    def poll(self, timeout_ms: int = 100) -> list[Exec]:
        """The execs reported, waiting up to `timeout_ms` for the first."""
        assert self._events is not None, "open() first, without count=True"
        batch = self._events.poll(timeout_ms)
        if not len(batch):
            return []
        # Per field, one conversion for the whole batch; Python per record only to build argv.
        columns = {name: batch[name].tolist() for name in
                   ("time_ns", "pid", "ppid", "uid", "cgroup_id", "ret", "cut_args", "syscall", "argc", "flags",
                    "comm", "path", "args")}
        arg_lens = batch["arg_len"].tolist()
        offset = self._clock_offset_ns
        execs = []
        for i in range(len(batch)):
            argc, flags, cut = columns["argc"][i], columns["flags"][i], columns["cut_args"][i]
            args: bytes = columns["args"][i]  # numpy drops the trailing NULs; each argument has its slot
            argv = tuple(_text(args[n * ARG_BYTES: n * ARG_BYTES + arg_lens[i][n]]) for n in range(argc))
            execs.append(Exec(
                time=(columns["time_ns"][i] + offset) / 1e9, pid=columns["pid"][i], ppid=columns["ppid"][i],
                uid=columns["uid"][i], cgroup_id=columns["cgroup_id"][i], comm=_text(columns["comm"][i]),
                syscall=self._syscalls.get(columns["syscall"][i], str(columns["syscall"][i])),
                path=_text(columns["path"][i]), argv=argv, ret=columns["ret"][i],
                cut_args=tuple(n for n in range(argc) if cut >> n & 1), more_args=bool(flags & _MORE_ARGS),
                path_cut=bool(flags & _PATH_CUT), args_unreadable=bool(flags & _ARGS_UNREADABLE),
            ))
        return execs

    def counts(self) -> list[ExecCount]:
        """Execs and failed execs per comm and cgroup, most execs first (count mode)."""
        keys, values = self.obj.maps["counts"].lookup_batch_sum()  # type: ignore[attr-defined]
        rows = [ExecCount(_text(bytes(k["comm"]).rstrip(b"\0")), int(k["cgroup_id"]), int(v["execs"]),
                          int(v["failures"])) for k, v in zip(keys, values)]
        return sorted(rows, key=lambda c: (-c.execs, c.comm, c.cgroup_id))

    def forget(self, rows: list[ExecCount]) -> None:
        """Deletes these (comm, cgroup) counts from the kernel's map, making room for new ones."""
        for row in rows:
            self.obj.maps["counts"].delete({"comm": row.comm.encode(), "cgroup_id": row.cgroup_id})

    def metrics(self) -> Iterator[Metric]:
        """Execs and failures per comm, container and pod (the containers' labels from `containers`)."""
        from prometheus_client.core import CounterMetricFamily

        totals: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
        for row in self._prune(self.counts()):
            container, pod = self._labels_of(row.cgroup_id)
            total = totals[(row.comm, container, pod)]
            total[0] += row.execs
            total[1] += row.failures
        labels = ["comm", "container", "pod"]
        execs = CounterMetricFamily("bpfscope_execs", "Programs executed (execve, execveat), by the new "
                                    "program's comm and its container", labels=labels)
        failures = CounterMetricFamily("bpfscope_exec_failures", "Execs that failed, by the caller's comm",
                                       labels=labels)
        for key, (n, failed) in sorted(totals.items()):
            execs.add_metric(list(key), n)
            failures.add_metric(list(key), failed)
        yield from (execs, failures)

    def _labels_of(self, cgroup_id: int) -> tuple[str, str]:
        labels = self._labels.get(cgroup_id)
        if labels is None:
            if self.containers is None:
                return ("", "")
            labels = self.containers.labels(cgroup_id)
            if labels[0] or self.containers.path(cgroup_id):  # not merely unknown yet
                self._labels[cgroup_id] = labels
        return labels

    def _prune(self, rows: list[ExecCount]) -> list[ExecCount]:
        """With the map nine tenths full, the counts of cgroups that no longer exist (containers gone)
        are deleted, so a node that runs many short-lived containers keeps counting new ones: their
        series end, as a finished container's do."""
        if self.containers is None or len(rows) < self.max_counts * 9 // 10:
            return rows
        alive = self.containers.exists({row.cgroup_id for row in rows})
        gone = [row for row in rows if not alive[row.cgroup_id]]
        self.forget(gone)
        for row in gone:
            self._labels.pop(row.cgroup_id, None)
        dropped = {(row.comm, row.cgroup_id) for row in gone}
        return [row for row in rows if (row.comm, row.cgroup_id) not in dropped]


TOOL = ExecSnoop
