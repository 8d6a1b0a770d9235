"""The open tracer: loads opensnoop.bpf.o with its filters frozen in .rodata, attaches it to the exit
tracepoints of open, openat and openat2 (those this kernel has: arm64 has no open), and
reads what it streams through its ring buffer, or, in count mode (the agent's), the per-comm
counters it keeps.

Every filter runs in the kernel; this module checks them, writes them, and turns records into
`OpenEvent`s. The hot path stays in numpy: `poll()` returns the raw batch, and `json_lines()` and
`text_lines()` format each distinct record of a batch once (output.batchlines)."""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional

import numpy as np

from ..errors import BpfscopeError, NotSupportedError
from ..features import Feature
from ..mounts import ensure_tracefs
from ..object import ObjectSpec, tool_object
from ..output.batchlines import clock_stamps, distinct, epoch_stamps, join_lines
from ..ringbuf import RingBuffer
from ..variants import Variant, choose
from ._base import (
    COMM,
    COMM_BYTES,
    DURATION,
    INTERVAL,
    JSON,
    PID,
    RING_BYTES,
    TRACE,
    Kind,
    Option,
    OptionValueError,
    Tool,
    check_pid,
)

if TYPE_CHECKING:
    from prometheus_client.core import Metric

__all__ = [
    "COMM_BYTES",
    "DEFAULT_RING_BYTES",
    "PATH_BYTES",
    "CommCount",
    "Filters",
    "OpenEvent",
    "Snoop",
    "TOOL",
    "flag_names",
]

PATH_BYTES = 256  # PATH_BYTES in opensnoop.bpf.c, NUL included
DEFAULT_RING_BYTES = 1 << 23  # 8 MiB: 25,000 events, most of 0.1 s of a tight open loop
_WAKEUP_FRACTION = 8  # the kernel wakes the reader each time an eighth of the ring fills

# O_ACCMODE's three values, then the flags worth naming, from this platform's own constants (arm64
# numbers O_DIRECTORY and O_NOFOLLOW differently from x86).
_ACCESS = {os.O_RDONLY: "O_RDONLY", os.O_WRONLY: "O_WRONLY", os.O_RDWR: "O_RDWR"}
_FLAGS = [(getattr(os, name), name) for name in (
    "O_CREAT", "O_EXCL", "O_NOCTTY", "O_TRUNC", "O_APPEND", "O_NONBLOCK", "O_DSYNC", "O_DIRECT",
    "O_LARGEFILE", "O_DIRECTORY", "O_NOFOLLOW", "O_NOATIME", "O_CLOEXEC", "O_PATH", "O_TMPFILE", "O_SYNC",
) if hasattr(os, name)]
# O_TMPFILE and O_SYNC include O_DIRECTORY and O_DSYNC: test the wider ones first, as whole masks.
_FLAGS.sort(key=lambda item: -bin(item[0]).count("1"))


def flag_names(flags: int) -> str:
    """O_* names joined by "|" (`O_RDONLY|O_CLOEXEC`); bits without a name as hex."""
    names = [_ACCESS.get(flags & 3, f"0x{flags & 3:x}")]
    rest = flags & ~3 & ~getattr(os, "O_LARGEFILE", 0)  # the kernel adds O_LARGEFILE on 64-bit
    for bit, name in _FLAGS:
        if bit and rest & bit == bit:
            names.append(name)
            rest &= ~bit
    if rest:
        names.append(f"0x{rest:x}")
    return "|".join(names)


@dataclass(frozen=True)
class Filters:
    """What the kernel lets through: all given filters must match."""

    pid: Optional[int] = None  # the process (tgid)
    comm: Optional[str] = None  # exact, at most 15 bytes of UTF-8
    failed: bool = False  # only opens that returned an error
    path_prefix: Optional[str] = None  # the path as passed to the syscall starts with it

    def check(self) -> None:
        """Raises BpfscopeError (EINVAL, ESRCH) for a filter the kernel cannot apply."""
        if self.pid is not None:
            if self.pid <= 0:
                raise BpfscopeError(errno.EINVAL, f"pid {self.pid} must be greater than 0")
            check_pid(self.pid)
        if self.comm is not None:
            encoded = self.comm.encode()
            if not encoded or len(encoded) >= COMM_BYTES or b"\0" in encoded:
                raise BpfscopeError(errno.EINVAL, f"comm {self.comm!r} must be 1 to {COMM_BYTES - 1} bytes, no NUL")
        if self.path_prefix is not None:
            encoded = self.path_prefix.encode("utf-8", "surrogateescape")
            if not encoded or len(encoded) >= PATH_BYTES or b"\0" in encoded:
                raise BpfscopeError(errno.EINVAL,
                                    f"path prefix {self.path_prefix!r} must be 1 to {PATH_BYTES - 1} bytes, no NUL")


@dataclass(frozen=True)
class OpenEvent:
    time: float  # seconds since the epoch
    pid: int
    tid: int
    comm: str
    call: str  # "open", "openat", "openat2"
    ret: int  # the fd, or -errno
    flags: int
    path: str

    @property
    def fd(self) -> Optional[int]:
        return self.ret if self.ret >= 0 else None

    @property
    def errno(self) -> Optional[int]:
        return -self.ret if self.ret < 0 else None

    def as_dict(self) -> dict[str, Any]:
        return {"time": round(self.time, 6), "pid": self.pid, "tid": self.tid, "comm": self.comm, "call": self.call,
                "fd": self.fd, "errno": _errno_name(self.ret) if self.ret < 0 else None,
                "flags": flag_names(self.flags), "path": self.path}


@dataclass(frozen=True)
class CommCount:
    comm: str
    opens: int
    failed: int


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def _json(raw: bytes) -> str:
    return encode_basestring_ascii(_text(raw))


def _errno_name(ret: int) -> str:
    return errno.errorcode.get(-ret, str(-ret))


def _json_result(ret: int) -> str:
    return f'"fd":{ret},"errno":null' if ret >= 0 else f'"fd":null,"errno":"{_errno_name(ret)}"'


def _text_result(ret: int) -> str:
    """The FD and ERR columns."""
    return f"{ret:>4} {'':<7}" if ret >= 0 else f"{-1:>4} {_errno_name(ret):<7}"


def path_prefix(text: str) -> str:
    if not text or len(text.encode("utf-8", "surrogateescape")) >= PATH_BYTES:
        raise OptionValueError(f"{text!r} must be 1 to {PATH_BYTES - 1} bytes")
    return text


class Snoop(Tool):
    """`with Snoop(filters) as snoop:` loads and attaches; `poll()` gives batches of raw records
    (struct open_event); `events()`, `json_lines()` and `text_lines()` turn a batch into objects or
    output. With `count=True` nothing is streamed: `counts()` reads the per-comm counters, and `lost`
    counts the opens of a new comm once the counters map was full."""

    NAME = "opensnoop"
    HELP = "trace file opens: pid, comm, path, fd or error (syscall tracepoints)"
    NEEDS = (("tracepoints",), ("tracefs",), ("ringbuf",))
    CAPABILITIES = TRACE
    KIND = Kind.STREAMING
    OPTIONS = (
        PID,
        COMM,
        Option("failed", "only opens that failed"),
        Option("path_prefix", "only paths that start with PREFIX, as passed to the call (a relative path stays "
               "relative)", path_prefix, metavar="PREFIX"),
        Option("count", "count opens and failures per comm in the kernel; print no events", agent=False),
        INTERVAL.but(default=None, help="with --count: print the counts every S seconds too"),
        DURATION,
        JSON.but(help="one JSON object per open (with --count: per interval), and a final summary"),
        RING_BYTES.but(default=DEFAULT_RING_BYTES),
    )
    AGENT_KEY = "opens"
    AGENT_VALUES = {"count": True}  # opens per comm, counted in the kernel
    # the syscall's registers read at exit (5.15) or its arguments stashed at entry
    VARIANT = Variant(
        Feature.TASK_PT_REGS,
        ("exit_open", "exit_openat", "exit_openat2"),
        tuple(f"stash_{hook}_{call}" for call in ("open", "openat", "openat2") for hook in ("enter", "exit")),
    )

    def __init__(self, filters: Filters = Filters(), *, count: bool = False,
                 ring_bytes: int = DEFAULT_RING_BYTES, pin_dir: Optional[str] = None) -> None:
        super().__init__(pin_dir=pin_dir)  # counters pinned there carry on from an earlier run
        self.filters = filters
        self.count = count
        self.ring_bytes = ring_bytes
        self.calls: tuple[str, ...] = ()  # the syscalls traced: those whose tracepoints this kernel has
        self.stashing = False  # arguments kept at syscall entry (no bpf_task_pt_regs): two hooks per call
        self._call_names: dict[int, str] = {}  # enum open_call, from BTF
        self._clock_offset_ns = 0
        self._events: Optional[RingBuffer] = None

    @classmethod
    def _from_options(cls, values: Mapping[str, Any], pin_dir: Optional[str]) -> Snoop:
        filters = Filters(pid=values["pid"], comm=values["comm"], failed=values["failed"],
                          path_prefix=values["path_prefix"])
        return cls(filters, count=values["count"], ring_bytes=values["ring_bytes"], pin_dir=pin_dir)

    @property
    def kind(self) -> Kind:
        return Kind.POLLING if self.count else Kind.STREAMING

    # --- setting up ---

    def _open(self) -> None:
        """Checks the filters, loads with them, attaches every open tracepoint this kernel has."""
        self.filters.check()  # an unknown pid or a bad filter stops here, before anything is loaded
        spec = ObjectSpec.open(tool_object("opensnoop"))
        wanted = [name.removeprefix("exit_") for name in spec.programs if name.startswith("exit_")]
        calls = _present_calls(wanted)
        if not calls:
            raise NotSupportedError(f"syscall tracepoints for {', '.join(wanted)}",
                                    "none in tracefs events/syscalls (CONFIG_FTRACE_SYSCALLS off?)")
        # exit_<call>, or before Linux 5.15 stash_enter_<call> + stash_exit_<call>: the same events.
        self.stashing = choose(spec, self.VARIANT) is not None
        hooks = [("stash_enter", "enter"), ("stash_exit", "exit")] if self.stashing else [("exit", "exit")]
        skip = {"stash_enter"} if self.count and self.filters.path_prefix is None else set()  # nothing to stash
        for call in wanted:
            for program, _ in hooks:
                # As libbpf-tools' opensnoop does for a missing tracepoint.
                spec.programs[f"{program}_{call}"].autoload = call in calls and program not in skip
        hooks = [(program, hook) for program, hook in hooks if program not in skip]
        if not self.stashing:
            spec.maps["stash"].max_entries = 1
        self._configure(spec)
        spec.pin_maps(self.pin_dir, ["counts", "events_lost"])
        self._obj = obj = spec.load()
        names = obj.exported_type("call").python_type  # enum open_call: CALL_OPEN = 0, ...
        self._call_names = {int(n): n.name.removeprefix("CALL_").lower() for n in names}
        for call in calls:
            for program, hook in hooks:
                self.attach(obj.programs[f"{program}_{call}"].attach_tracepoint("syscalls", f"sys_{hook}_{call}"))
        if not self.count:
            self._events = self.ring(obj.ring_buffer("events"))
        self.calls = calls
        self._clock_offset_ns = time.time_ns() - time.clock_gettime_ns(time.CLOCK_MONOTONIC)

    def _configure(self, spec: ObjectSpec) -> None:
        f = self.filters
        rodata = spec.rodata
        if f.pid is not None:
            rodata["cfg_tgid"] = f.pid
        if f.comm is not None:
            words = np.frombuffer(f.comm.encode().ljust(COMM_BYTES, b"\0"), dtype=np.uint64)
            rodata["cfg_comm"] = tuple(int(w) for w in words)
            rodata["cfg_filter_comm"] = True
        rodata["cfg_failed_only"] = f.failed
        if f.path_prefix is not None:
            prefix = f.path_prefix.encode("utf-8", "surrogateescape")
            rodata["cfg_prefix"] = prefix
            rodata["cfg_prefix_len"] = len(prefix)
        rodata["cfg_count"] = self.count
        rodata["cfg_wakeup_bytes"] = max(4096, self.ring_bytes // _WAKEUP_FRACTION)
        spec.maps["events"].max_entries = self.ring_bytes if not self.count else 4096

    # --- reading ---

    def poll(self, timeout_ms: int = 100) -> np.ndarray[Any, Any]:
        """The records (struct open_event) up to the next time the kernel wakes the reader, which it
        does each time an eighth of the ring fills, or up to `timeout_ms` (0: what is there now)."""
        assert self._events is not None, "open() first, without count=True"
        return self._events.next_batch(timeout_ms)

    def _times(self, batch: np.ndarray[Any, Any]) -> list[float]:
        return (self._epoch_ns(batch) / 1e9).tolist()  # type: ignore[no-any-return]

    def events(self, batch: np.ndarray[Any, Any]) -> list[OpenEvent]:
        columns = [self._times(batch), batch["pid"].tolist(), batch["tid"].tolist(),
                   [_text(c) for c in batch["comm"].tolist()], [self._call(c) for c in batch["call"].tolist()],
                   batch["ret"].tolist(), batch["flags"].tolist(), [_text(p) for p in batch["path"].tolist()]]
        return [OpenEvent(*row) for row in zip(*columns)]

    def _call(self, number: int) -> str:
        return self._call_names.get(number, str(number))

    def json_lines(self, batch: np.ndarray[Any, Any]) -> bytes:
        """One JSON object per record, each ending in a newline (the keys of OpenEvent.as_dict). This
        is the command's hot path: each distinct record (all but its time) is formatted once, and
        the time stamps for the whole batch at once."""
        first, inverse = distinct(batch, ignore=("time_ns",))
        rendered = [
            f'"pid":{pid},"tid":{tid},"comm":{_json(comm)},"call":"{self._call(call)}",'
            f'{_json_result(ret)},"flags":"{flag_names(flags)}","path":{_json(path)}}}\n'.encode()
            for pid, tid, comm, call, ret, flags, path in self._columns(batch[first])]
        return join_lines(epoch_stamps(self._epoch_ns(batch), b'{"time":', b","), rendered, inverse)

    def text_lines(self, batch: np.ndarray[Any, Any]) -> bytes:
        """One line per record under `HEADER`, each ending in a newline; formatted as json_lines is."""
        first, inverse = distinct(batch, ignore=("time_ns",))
        rendered = [
            f"{pid:>7} {tid:>7} {_text(comm):<16} {_text_result(ret)} {flag_names(flags):<24} {_text(path)}\n"
            .encode("utf-8", "backslashreplace")
            for pid, tid, comm, call, ret, flags, path in self._columns(batch[first])]
        return join_lines(clock_stamps(self._epoch_ns(batch), after=b" "), rendered, inverse)

    HEADER = f"{'TIME':<15} {'PID':>7} {'TID':>7} {'COMM':<16} {'FD':>4} {'ERR':<7} {'FLAGS':<24} PATH"

    @staticmethod
    def _columns(rows: np.ndarray[Any, Any]) -> Iterator[tuple[Any, ...]]:
        return zip(*(rows[name].tolist() for name in ("pid", "tid", "comm", "call", "ret", "flags", "path")))

    def _epoch_ns(self, batch: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return batch["time_ns"].astype(np.int64) + self._clock_offset_ns

    def counts(self) -> list[CommCount]:
        """Opens and failed opens per comm, most opens first (count mode)."""
        keys, values = self.obj.maps["counts"].lookup_batch_sum()  # type: ignore[attr-defined]
        rows = [CommCount(_text(bytes(k).rstrip(b"\0")), int(v["opens"]), int(v["failed"]))
                for k, v in zip(keys, values)]
        return sorted(rows, key=lambda c: (-c.opens, c.comm))

    def metrics(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        opens = CounterMetricFamily("bpfscope_file_opens", "Files opened (open, openat, openat2), by comm",
                                    labels=["comm"])
        errors = CounterMetricFamily("bpfscope_file_open_errors", "Opens that failed, by comm", labels=["comm"])
        for row in self.counts():
            opens.add_metric([row.comm], row.opens)
            errors.add_metric([row.comm], row.failed)
        yield from (opens, errors)


TOOL = Snoop


def _present_calls(calls: list[str]) -> tuple[str, ...]:
    """Those of `calls` whose exit tracepoint this kernel has (mounting tracefs if needed)."""
    events = os.path.join(ensure_tracefs(), "events", "syscalls")
    return tuple(call for call in calls if os.path.isdir(os.path.join(events, f"sys_exit_{call}")))
