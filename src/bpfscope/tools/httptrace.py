"""The HTTP tracer: loads httptrace.bpf.o, attaches it to the socket syscalls' tracepoints and to
OpenSSL's SSL_read/SSL_write (uprobes on libssl), and turns the heads the kernel sends into one
`Request` per exchange: method, path, status, sizes and latency, seen from the server's or the
client's side.

The kernel sends only buffers that start like an HTTP head, plus an END record with the byte
counts when an exchange ends; this module parses the heads and pairs them up per connection
((pid, fd) for plain sockets, (pid, SSL *) for TLS). A request is handed out when its exchange
ends: at the connection's next request or its close. One whose response started more than
`idle_flush` seconds ago while the connection stays open (keep-alive) is handed out then, with
the response bytes the kernel has counted so far."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Mapping, NamedTuple, Optional

import numpy as np

from ..errors import BpfscopeError
from ..object import ObjectSpec, tool_object
from ..program import resolve_binary
from ..ringbuf import RingBuffer
from ._base import DURATION, INTERVAL, JSON, PID, RING_BYTES, TRACE, Kind, Option, OptionValueError, Tool
from ._httpseries import Series

if TYPE_CHECKING:
    from prometheus_client.core import Metric

__all__ = ["DEFAULT_RING_BYTES", "TOOL", "Counts", "Request", "Tracer", "libssl_of", "percentile"]

DEFAULT_RING_BYTES = 1 << 20
_WAKEUP_FRACTION = 8  # the kernel wakes the reader each time an eighth of the ring fills
HEAD_BYTES = 256  # HEAD_BYTES in httptrace.bpf.c

# Syscalls whose data the kernel looks at; each enter program has one exit program behind it.
_SYSCALLS = ("read", "recvfrom", "readv", "write", "sendto", "writev")
_SSL_ENTRIES = {"SSL_read": "enter_ssl_read", "SSL_read_ex": "enter_ssl_read_ex",
                "SSL_write": "enter_ssl_write", "SSL_write_ex": "enter_ssl_write_ex"}
_REQUEST_LINE = re.compile(rb"^([A-Z]+) (\S*)(?: (HTTP/1\.[01]))?")
_STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3})")
_LIBSSL = re.compile(r"/libssl\.so[.\d]*$")


@dataclass
class Request:
    """One HTTP exchange as one process saw it. `time` is the request's first byte (wall clock);
    `latency` runs from there to the response's first byte (None: no response seen); sizes are
    bytes through the socket (or SSL) calls, heads and bodies, chunk framing included."""

    time: float
    pid: int
    comm: str
    side: str  # "server" (it read the request) or "client" (it wrote it)
    tls: bool
    method: str
    path: str
    status: Optional[int]
    request_bytes: int
    response_bytes: int
    latency: Optional[float]  # seconds
    local_port: int  # 0 where unknown
    remote_port: int
    fd: int  # -1 where unknown (TLS before any socket call was seen)

    def as_dict(self) -> dict[str, Any]:
        return {"time": round(self.time, 6), "pid": self.pid, "comm": self.comm, "side": self.side,
                "tls": self.tls, "method": self.method, "path": self.path, "status": self.status,
                "request_bytes": self.request_bytes, "response_bytes": self.response_bytes,
                "latency_ms": None if self.latency is None else round(self.latency * 1000, 3),
                "local_port": self.local_port, "remote_port": self.remote_port}


@dataclass(frozen=True)
class Counts:
    """The kernel's counters: buffers that started like an HTTP head, those left out (not a
    socket, or not on --port), records lost to a full ring, and runs of the programs the kernel
    skipped (Program.missed_runs: counted from Linux 6.7; a busy Linux 7.x CPU skips some)."""

    heads: int
    skipped: int
    lost: int
    missed: int


class _Record(NamedTuple):
    """One struct http_event as plain Python; `head` last, as _records builds it apart."""

    kind: int
    ssl: int
    tgid: int
    fd: int
    captured: int
    time_ns: int
    comm: bytes
    side: int
    request_bytes: int
    response_bytes: int
    latency_ns: int
    lport: int
    rport: int
    head: bytes


@dataclass
class _Exchange:
    request: Request
    responded_at: Optional[float] = None  # monotonic, when the final response head came


def libssl_of(pid: int) -> list[str]:
    """The OpenSSL libraries process `pid` has mapped, as paths this process can open."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise BpfscopeError(errno.ESRCH, f"no process with pid {pid}") from None
    found: list[str] = []
    for line in lines:
        fields = line.split(maxsplit=5)
        path = fields[5] if len(fields) == 6 else ""
        if _LIBSSL.search(path) and path not in found:
            found.append(path)
    # Through the process's root: in another mount namespace (a container, or the agent in one) the
    # same path here may name another file, or none.
    return [f"/proc/{pid}/root{p}" for p in found]


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise OptionValueError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise OptionValueError(f"{text!r} is not a port (1 to 65535)")
    return value


def milliseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise OptionValueError(f"{text!r} is not a number of milliseconds") from None
    if not value >= 0:
        raise OptionValueError(f"{text!r} must be 0 or more")
    return value


def route_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise OptionValueError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 10_000:
        raise OptionValueError(f"{text!r} must be from 1 to 10,000")
    return value


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank `q` percentile (0 < q <= 100) of `values`, which must not be empty."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100)
    return ordered[int(rank) - 1]


class Tracer(Tool):
    """`with Tracer(pid=None, port=None) as t: t.poll()` → finished `Request`s; detaches on exit.

    `tls`: attach to OpenSSL as well (for `pid`: the libssl it has mapped, an error if none;
    system-wide: the system's libssl, skipped if there is none). Requests whose response took less
    than `min_latency` seconds are left out (those without a response are kept). In the agent the
    requests are tallied into RED series (requests, errors, durations by method, status class, route
    and side; at most `max_routes` routes), kept in a map pinned under `pin_dir`."""

    NAME = "httptrace"
    HELP = "trace HTTP/1.x requests of any process, plain and OpenSSL (tracepoints, uprobes)"
    NEEDS = (("tracepoints",), ("tracefs",), ("uprobes",), ("ringbuf",))
    CAPABILITIES = TRACE
    KIND = Kind.STREAMING
    OPTIONS = (
        PID.but(help="only this process (its threads, not its children)"),
        Option("port", "only connections with this local or remote port", port_number, metavar="PORT"),
        Option("min_latency", "show and summarize only requests whose response took at least MS milliseconds "
               "(and those without a response)", milliseconds, default=0.0, metavar="MS", agent=False),
        Option("tls", "plain HTTP only: no uprobes on OpenSSL", default=True),
        Option("max_routes", 'distinct routes counted before the rest count as route "other"', route_count,
               default=100, cli=False),
        INTERVAL.but(default=0.5, help="seconds between refreshes of the live view (default: 0.5)"),
        DURATION,
        JSON.but(help="one JSON object per request, and a final summary"),
        RING_BYTES.but(default=DEFAULT_RING_BYTES),
    )
    AGENT_KEY = "http"

    def __init__(self, *, pid: Optional[int] = None, port: Optional[int] = None, tls: bool = True,
                 min_latency: float = 0.0, ring_bytes: int = DEFAULT_RING_BYTES, idle_flush: float = 1.0,
                 max_routes: int = 100, pin_dir: Optional[str] = None) -> None:
        super().__init__(pin_dir=pin_dir)  # counters pinned here carry on from an earlier run
        self.pid = pid
        self.port = port
        self.tls = tls
        self.min_latency = min_latency
        self.ring_bytes = ring_bytes
        self.idle_flush = idle_flush
        self.max_routes = max_routes
        self.libssl: list[str] = []
        self._exchanges: dict[tuple[int, int, int], _Exchange] = {}
        self._clock_offset_ns = 0
        self._events: Optional[RingBuffer] = None
        self._series: Optional[Series] = None

    @classmethod
    def _from_options(cls, values: Mapping[str, Any], pin_dir: Optional[str]) -> Tracer:
        return cls(pid=values["pid"], port=values["port"], tls=values["tls"], min_latency=values["min_latency"] / 1000,
                   ring_bytes=values["ring_bytes"], max_routes=values["max_routes"], pin_dir=pin_dir)

    def _open(self) -> None:
        """Checks the target, loads, and attaches."""
        if self.pid is not None and not os.path.exists(f"/proc/{self.pid}"):
            raise BpfscopeError(errno.ESRCH, f"no process with pid {self.pid}")
        if self.tls:
            self.libssl = self._find_libssl()
        spec = ObjectSpec.open(tool_object("httptrace"))
        spec.rodata["cfg_tgid"] = self.pid or 0
        spec.rodata["cfg_port"] = self.port or 0
        spec.rodata["cfg_tls"] = bool(self.libssl)
        spec.rodata["cfg_wakeup_bytes"] = max(4096, self.ring_bytes // _WAKEUP_FRACTION)
        spec.maps["events"].max_entries = self.ring_bytes
        spec.pin_maps(self.pin_dir, ["counts", "events_lost"])
        if not self.libssl:
            for name in (*_SSL_ENTRIES.values(), "exit_ssl_io", "enter_ssl_free"):
                spec.programs[name].autoload = False
        self._obj = obj = spec.load()
        self._events = self.ring(obj.ring_buffer("events"))
        programs = obj.programs
        for syscall in _SYSCALLS:
            self.attach(programs[f"enter_{syscall}"].attach_tracepoint("syscalls", f"sys_enter_{syscall}"))
            self.attach(programs["exit_read"].attach_tracepoint("syscalls", f"sys_exit_{syscall}"))
        self.attach(programs["enter_close"].attach_tracepoint("syscalls", "sys_enter_close"))
        for library in self.libssl:
            for symbol, program in _SSL_ENTRIES.items():
                self.attach(programs[program].attach_uprobe(library, symbol, pid=self.pid))
                self.attach(programs["exit_ssl_io"].attach_uprobe(library, symbol, pid=self.pid, retprobe=True))
            self.attach(programs["enter_ssl_free"].attach_uprobe(library, "SSL_free", pid=self.pid))
        self._series = Series(self.max_routes, os.path.join(self.pin_dir, "series") if self.pin_dir else None)
        self._clock_offset_ns = time.time_ns() - time.clock_gettime_ns(time.CLOCK_MONOTONIC)

    def _find_libssl(self) -> list[str]:
        if self.pid is not None:
            found = libssl_of(self.pid)
            if not found:
                raise BpfscopeError(errno.ENOENT, f"process {self.pid} has no libssl mapped, so its HTTPS cannot "
                                                  f"be traced; add --no-tls to trace its plain HTTP only")
            return found
        try:
            return [resolve_binary("libssl")]
        except BpfscopeError:
            return []  # no OpenSSL on this system: plain HTTP only

    # --- reading ---

    def poll(self, timeout_ms: int = 100) -> list[Request]:
        """Requests whose exchange ended by the kernel's next wakeup (each time an eighth of the ring
        fills) or by `timeout_ms`, whichever comes first: one batch per wakeup, not per record."""
        assert self._events is not None, "open() first"
        done: list[Request] = []
        self._records(self._events.next_batch(timeout_ms), done)
        self._flush_idle(done)
        return self._kept(done)

    def _kept(self, requests: list[Request]) -> list[Request]:
        if not self.min_latency:
            return requests
        return [r for r in requests if r.latency is None or r.latency >= self.min_latency]

    def _records(self, batch: np.ndarray[Any, Any], done: list[Request]) -> None:
        """Each field of the batch turned into Python once (numpy's per-record field access costs
        about a microsecond a field), then one `_record` per row."""
        if not len(batch):
            return
        heads = np.ascontiguousarray(batch["head"]).view(f"S{HEAD_BYTES}").ravel()  # trailing NULs dropped
        columns = [batch[name].tolist() for name in _Record._fields[:-1]]
        for row in zip(*columns, heads.tolist()):
            self._record(_Record(*row), done)

    def _record(self, record: _Record, done: list[Request]) -> None:
        kind, ssl, tgid = record.kind, record.ssl, record.tgid
        key = (tgid, ssl, -1 if ssl else record.fd)
        head = record.head[: record.captured]
        if kind == 0:  # EVENT_REQUEST
            earlier = self._exchanges.pop(key, None)
            if earlier is not None:  # its END was lost
                done.append(earlier.request)
            match = _REQUEST_LINE.match(head)
            if match is None:
                return
            method, target, version = match.groups()
            path = target.decode("latin-1")
            if version is None:  # the request line did not fit in the bytes captured
                path += "…"
            self._exchanges[key] = _Exchange(Request(
                time=(record.time_ns + self._clock_offset_ns) / 1e9, pid=tgid,
                comm=record.comm.split(b"\0", 1)[0].decode("utf-8", "replace"),
                side="server" if record.side == 0 else "client", tls=bool(ssl),
                method=method.decode(), path=path, status=None, request_bytes=record.request_bytes,
                response_bytes=0, latency=None, local_port=record.lport, remote_port=record.rport, fd=record.fd,
            ))
            return
        exchange = self._exchanges.get(key)
        if exchange is None:
            return  # began before we attached, or already handed out as idle
        request = exchange.request
        if kind == 1:  # EVENT_RESPONSE
            status = _STATUS_LINE.match(head)
            if status is None or (request.status is not None and not 100 <= request.status < 200):
                return
            request.status = int(status.group(1))
            request.latency = record.latency_ns / 1e9
            request.request_bytes = record.request_bytes
            if not 100 <= request.status < 200:
                exchange.responded_at = time.monotonic()
            return
        # EVENT_END
        request.request_bytes = record.request_bytes
        request.response_bytes = record.response_bytes
        if request.fd < 0:
            request.fd = record.fd
        del self._exchanges[key]
        done.append(request)

    def _flush_idle(self, done: list[Request]) -> None:
        now = time.monotonic()
        idle = [key for key, ex in self._exchanges.items()
                if ex.responded_at is not None and now - ex.responded_at >= self.idle_flush]
        for key in idle:
            done.append(self._counted(key, self._exchanges.pop(key)))

    def _counted(self, key: tuple[int, int, int], exchange: _Exchange) -> Request:
        """The request with the byte counts the kernel holds for its connection now."""
        request = exchange.request
        tgid, ssl, fd = key
        with contextlib.suppress(OSError):
            conn = self.obj.maps["conns"].lookup({"ssl": ssl, "tgid": tgid, "fd": fd})
            if conn is not None:
                request.request_bytes = int(conn.request_bytes)
                request.response_bytes = int(conn.response_bytes)
        return request

    def flush(self) -> list[Request]:
        """Every request still waiting for its exchange to end, as it stands (at the end of a run)."""
        assert self._events is not None, "open() first"
        done: list[Request] = []
        self._records(self._events.drain(), done)
        exchanges, self._exchanges = self._exchanges, {}
        done.extend(self._counted(key, exchange) for key, exchange in exchanges.items())
        return self._kept(done)

    def counts(self) -> Counts:
        _, totals = self.obj.maps["counts"].lookup_batch_sum()  # type: ignore[attr-defined]
        row = totals[0]
        return Counts(int(row["heads"]), int(row["skipped"]), self.lost, self.obj.missed_runs())

    # --- the agent's series ---

    def tally(self, batch: list[Request]) -> None:
        assert self._series is not None, "open() first"
        self._series.add(batch)

    def metrics(self) -> Iterator[Metric]:
        assert self._series is not None, "open() first"
        yield from self._series.families()

    def close(self) -> None:
        series, self._series = self._series, None
        try:
            if series is not None:
                series.close()  # written back to its pinned map
        finally:
            super().close()


TOOL = Tracer
