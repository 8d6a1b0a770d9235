"""The built-in tools as agent sources. Each reads its kernel counters once per scrape (batch map
lookups, summed over CPUs) and yields Prometheus metric families; nothing runs per event in
Python except for HTTP, whose requests are parsed from the ring as `bpfscope httptrace` does.
A tool on the Tool base is a ToolSource (its families are its own, Tool.metrics); the other sources
here are TEMPORARY until their tools are converted (issue 16 step 2).

Names follow Prometheus conventions: `bpfscope_<what>_total` for counters, base units (bytes,
seconds). Labels with unbounded values are bounded: flows to the top N by bytes, HTTP routes to
`max_routes` (then "other"), containers by the resolver's own bound."""

from __future__ import annotations

import logging
import os
import re
import struct
import threading
from collections import defaultdict
from typing import Any, Iterable, Iterator, Mapping, Optional

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from .. import _libbpf
from ..maps import Map, MapType
from ..pin import ensure_pin_dir
from ..tools._base import Kind, Tool
from ..tools.execsnoop import ExecCount, ExecSnoop
from ..tools.funclatency import FunctionLatency, Unit
from ..tools.httptrace import Request, Tracer
from .config import FuncLatencyConfig, HttpConfig
from .containers import ContainerResolver
from .source import Source

__all__ = [
    "ToolSource", "ExecsSource", "FuncLatencySource", "HttpSource",
    "lost_events", "received_events", "unseen_families", "normalize_route",
]

# funclatency slots are log2 of nanoseconds (slot i: [2^i, 2^(i+1)) ns); exported from 256 ns to
# about 69 s, a fixed set so every scrape has the same buckets.
_LATENCY_SLOTS = range(7, 36)
# HTTP durations: prometheus_client's defaults, which cover 5 ms to 10 s.
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


def received_events(tool: str, source: str, received: int, ring: str = "events") -> CounterMetricFamily:
    """What the agent took from a tool's ring buffer: with the lost count, everything the kernel tried to
    send. `source` (the pin directory's name) tells apart the instances of one tool (one per interface)."""
    family = CounterMetricFamily("bpfscope_ringbuf_received_events", "Events the agent read from the ring buffer "
                                 "(since it started)", labels=["tool", "ring", "source"])
    family.add_metric([tool, ring, source], received)
    return family


def lost_events(tool: str, source: str, lost: int, ring: str = "events") -> CounterMetricFamily:
    """What a tool's programs saw and could not deliver: its ring buffer was full (or, for tools that
    count in the kernel, its counters map was)."""
    family = CounterMetricFamily("bpfscope_ringbuf_lost_events", "Events the kernel could not deliver: "
                                 "the ring buffer (or a counters map) was full", labels=["tool", "ring", "source"])
    family.add_metric([tool, ring, source], lost)
    return family


class ToolSource(Source):
    """A tool on the Tool base (bpfscope.tools), as its config section asks, with the option values the
    agent fixes (Tool.AGENT_VALUES) and its maps pinned under `pin_dir`. A scrape yields the tool's own
    families (Tool.metrics) and, for every tool, what it could not see: lost records and skipped runs.
    A streaming tool is pumped between scrapes: the agent's reader thread polls it and tallies each batch
    (Tool.tally), under a lock that a scrape's metrics() takes too."""

    def __init__(self, tool: type[Tool], key: str, options: Mapping[str, Any], pin_dir: str) -> None:
        super().__init__(pin_dir)
        self.name = key
        self.tool = tool
        self.options = {**options, **tool.AGENT_VALUES}
        self._tool: Optional[Tool] = None
        self._lock = threading.Lock()

    def open(self) -> None:
        self._tool = self.tool.from_options(self.options, pin_dir=self.pin_dir).open()
        self.streams = self._tool.kind is Kind.STREAMING
        for note in self._tool.notes:
            logging.getLogger("bpfscope.agent").info("%s: %s", self.name, note)

    def pump(self, timeout_ms: int) -> None:
        assert self._tool is not None
        batch = self._tool.poll(timeout_ms)  # parsed here, outside the lock: a scrape waits only for the tally
        if len(batch):
            with self._lock:
                self._tool.tally(batch)

    def collect(self) -> Iterator[Metric]:
        assert self._tool is not None
        with self._lock:
            families = list(self._tool.metrics())
        yield from families
        yield from unseen_families(self.name, os.path.basename(self.pin_dir), self._tool)

    def close(self) -> None:
        if self._tool is not None:
            self._tool.close()
            self._tool = None


def unseen_families(key: str, source: str, tool: Tool) -> Iterator[Metric]:
    """What `tool` could not see, for every tool: records lost and program runs the kernel skipped
    (labelled by its config key and its source, the pin directory's name, since one tool may run on
    several interfaces); and per ring buffer, what was lost and what the agent read."""
    stats = tool.stats()
    lost = CounterMetricFamily("bpfscope_tool_lost_events", "Records a tool's programs saw and could not deliver: "
                               "a ring buffer or a counters map was full", labels=["tool", "source"])
    lost.add_metric([key, source], stats.lost)
    missed = CounterMetricFamily("bpfscope_tool_missed_runs", "Runs of a tool's programs the kernel skipped "
                                 "(another BPF program was running on that CPU); counted from Linux 6.7",
                                 labels=["tool", "source"])
    missed.add_metric([key, source], stats.missed)
    yield from (lost, missed)
    for ring, count in tool.lost_by_ring().items():
        yield lost_events(key, source, count, ring)
    for ring, count in tool.received_by_ring().items():
        yield received_events(key, source, count, ring)


class ExecsSource(Source):
    """Execs per comm and container, counted in the kernel by comm and cgroup id; cgroup ids become
    container and pod labels here, at scrape time."""

    name = "execs"

    def __init__(self, pin_dir: str, resolver: Optional[ContainerResolver], max_counts: int = 10240) -> None:
        super().__init__(pin_dir)
        self.resolver = resolver
        self.max_counts = max_counts
        self._snoop: Optional[ExecSnoop] = None
        # A cgroup's labels once known, kept after its container is gone (and the resolver forgets
        # it), so its counts stay in the same series rather than moving to the host's.
        self._labels: dict[int, tuple[str, str]] = {}

    def _labels_of(self, cgroup_id: int) -> tuple[str, str]:
        labels = self._labels.get(cgroup_id)
        if labels is None:
            if self.resolver is None:
                return ("", "")
            labels = self.resolver.labels(cgroup_id)
            if labels[0] or self.resolver.path(cgroup_id):  # not merely unknown yet
                self._labels[cgroup_id] = labels
        return labels

    def open(self) -> None:
        self._snoop = ExecSnoop(count=True, pin_dir=self.pin_dir, max_counts=self.max_counts).open()

    def _prune(self, rows: list[ExecCount]) -> list[ExecCount]:
        """With the map nine tenths full, the counts of cgroups that no longer exist (containers gone)
        are deleted, so a node that runs many short-lived containers keeps counting new ones: their
        series end, as a finished container's do."""
        if self.resolver is None or len(rows) < self.max_counts * 9 // 10:
            return rows
        alive = self.resolver.exists({row.cgroup_id for row in rows})
        gone = [row for row in rows if not alive[row.cgroup_id]]
        assert self._snoop is not None
        self._snoop.forget(gone)
        for row in gone:
            self._labels.pop(row.cgroup_id, None)
        dropped = {(row.comm, row.cgroup_id) for row in gone}
        return [row for row in rows if (row.comm, row.cgroup_id) not in dropped]

    def collect(self) -> Iterator[Metric]:
        assert self._snoop is not None
        totals: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
        for row in self._prune(self._snoop.counts()):
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
        yield from (execs, failures, lost_events(self.name, os.path.basename(self.pin_dir), self._snoop.lost, "counts"))

    def close(self) -> None:
        if self._snoop is not None:
            self._snoop.close()
            self._snoop = None


class FuncLatencySource(Source):
    name = "funclatency"

    def __init__(self, config: FuncLatencyConfig, pin_dir: str) -> None:
        super().__init__(pin_dir)
        self.config = config
        self._timer: Optional[FunctionLatency] = None

    def open(self) -> None:
        c = self.config
        self._timer = FunctionLatency(c.target, c.symbol, pid=c.pid, unit=Unit.NSECS, pin_dir=self.pin_dir).open()

    def collect(self) -> Iterator[Metric]:
        assert self._timer is not None
        snap = self._timer.snapshot()
        buckets: list[tuple[str, float]] = []
        cumulative = sum(snap.slots[: _LATENCY_SLOTS.start])
        for slot in _LATENCY_SLOTS:
            cumulative += snap.slots[slot] if slot < len(snap.slots) else 0
            buckets.append((repr((1 << (slot + 1)) / 1e9), cumulative))
        buckets.append(("+Inf", sum(snap.slots)))
        family = HistogramMetricFamily("bpfscope_function_latency_seconds", "Time from a function's entry to its "
                                       "return (uprobes)", labels=["target", "symbol"])
        family.add_metric([self.config.target, self.config.symbol], buckets, snap.sum_ns / 1e9)
        yield family

    def close(self) -> None:
        if self._timer is not None:
            self._timer.close()
            self._timer = None


_ROUTE_CACHE = 4096  # paths remembered with their route
_ROUTE_BYTES = 160  # a route label's longest, so the series keys fit their pinned map
_ID_SEGMENT = re.compile(r"^(?:\d+|[0-9a-fA-F]{8,}|[0-9a-fA-F-]{36})$")


def normalize_route(path: str) -> str:
    """A request path as a route: the query dropped, and segments that are ids (numbers, long hex,
    UUIDs) replaced by `:id`, so /users/42/orders and /users/7/orders are one route."""
    path = path.split("?", 1)[0].split("#", 1)[0] or "/"
    return "/".join(":id" if _ID_SEGMENT.match(segment) else segment for segment in path.split("/"))


class _Red:
    """Requests, errors and a duration histogram of one (method, status class, route, side)."""

    __slots__ = ("requests", "errors", "timed", "buckets", "seconds")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.timed = 0  # those with a response, whose duration is known
        self.buckets = [0] * len(_HTTP_BUCKETS)
        self.seconds = 0.0


class _PinnedSeries:
    """The HTTP series are counted here in Python, not in the kernel, so they are kept in a hash map
    the agent makes and pins itself (no program writes it): a restart takes them over as it takes
    over the tools' maps. They are written back at each scrape and at close."""

    KEY_BYTES = 192  # method, status class, route and side, NUL-separated
    VALUE = struct.Struct(f"<{3 + len(_HTTP_BUCKETS)}Qd")  # requests, errors, timed, buckets, seconds
    ENTRIES = 16384

    def __init__(self, path: str) -> None:
        if not os.path.exists(path):
            fd = _libbpf.check(_libbpf.bpf_map_create(MapType.HASH, b"bpfscope_http", self.KEY_BYTES,
                                                      self.VALUE.size, self.ENTRIES, None), "create a map for HTTP")
            try:
                ensure_pin_dir(path)
                _libbpf.check(_libbpf.bpf_obj_pin(fd, path.encode()), f"pin the HTTP series at {path}")
            finally:
                os.close(fd)
        self.map = Map.from_pin(path)

    def load(self) -> dict[tuple[str, str, str, str], _Red]:
        series = {}
        for raw_key, raw_value in self.map.items():
            parts = bytes(raw_key).rstrip(b"\0").decode().split("\0")
            if len(parts) != 4:
                continue
            red, values = _Red(), self.VALUE.unpack(bytes(raw_value))
            red.requests, red.errors, red.timed = values[:3]
            red.buckets, red.seconds = list(values[3:-1]), values[-1]
            series[(parts[0], parts[1], parts[2], parts[3])] = red
        return series

    def save(self, series: dict[tuple[str, str, str, str], _Red]) -> None:
        for key, red in series.items():
            raw_key = "\0".join(key).encode()[: self.KEY_BYTES].ljust(self.KEY_BYTES, b"\0")
            value = self.VALUE.pack(red.requests, red.errors, red.timed, *red.buckets, red.seconds)
            try:
                self.map.update(raw_key, value)
            except OSError as exc:  # full: the series stays counted in memory, not carried over
                logging.getLogger("bpfscope.agent").warning("http: cannot keep a series: %s", exc)
                return

    def close(self) -> None:
        self.map.close()


class HttpSource(Source):
    """HTTP RED metrics from `bpfscope httptrace`'s requests. Requests are parsed from the ring in
    batches by the agent's reader thread (`pump`); a scrape reads the totals under a lock."""

    name = "http"
    streams = True

    def __init__(self, config: HttpConfig, pin_dir: str, ring_bytes: int) -> None:
        super().__init__(pin_dir)
        self.config = config
        self.ring_bytes = ring_bytes
        self._tracer: Optional[Tracer] = None
        self._store: Optional[_PinnedSeries] = None
        self._series: dict[tuple[str, str, str, str], _Red] = {}
        self._routes: set[str] = set()
        self._route_of: dict[str, str] = {}  # path → route, so a busy path is normalized once
        self._lock = threading.Lock()
        self.received = 0

    def open(self) -> None:
        c = self.config
        self._tracer = Tracer(pid=c.pid, port=c.port, tls=c.tls, ring_bytes=self.ring_bytes,
                              pin_dir=self.pin_dir).open()
        try:
            self._store = _PinnedSeries(os.path.join(self.pin_dir, "series"))
            self._series = self._store.load()
        except BaseException:
            self.close()
            raise
        self._routes = {route for _, _, route, _ in self._series if route != "other"}

    def pump(self, timeout_ms: int) -> None:
        assert self._tracer is not None
        requests = self._tracer.poll(timeout_ms)
        if requests:
            with self._lock:
                for request in requests:
                    self._add(request)

    def _route(self, path: str) -> str:
        route = self._route_of.get(path)
        if route is None:
            if len(self._route_of) >= _ROUTE_CACHE:
                self._route_of.clear()
            route = self._route_of[path] = normalize_route(path)[:_ROUTE_BYTES]
        if route not in self._routes:
            if len(self._routes) >= self.config.max_routes:
                return "other"
            self._routes.add(route)
        return route

    def _add(self, request: Request) -> None:
        status_class = f"{request.status // 100}xx" if request.status else "none"
        key = (request.method, status_class, self._route(request.path), request.side)
        series = self._series.get(key) or self._series.setdefault(key, _Red())
        series.requests += 1
        if request.status is None or request.status >= 500:
            series.errors += 1
        if request.latency is not None:
            series.timed += 1
            series.seconds += request.latency
            for i, bound in enumerate(_HTTP_BUCKETS):
                if request.latency <= bound:
                    series.buckets[i] += 1
                    break

    def collect(self) -> Iterable[Metric]:
        assert self._tracer is not None
        labels = ["method", "status_class", "route", "side"]
        requests = CounterMetricFamily("bpfscope_http_requests", "HTTP requests seen, by method, status class "
                                       "(none: no response) and route", labels=labels)
        errors = CounterMetricFamily("bpfscope_http_request_errors", "HTTP requests answered 5xx or not at all",
                                     labels=["method", "route", "side"])
        durations = HistogramMetricFamily("bpfscope_http_request_duration_seconds", "From a request's first byte "
                                          "to its response's first byte", labels=labels)
        error_totals: dict[tuple[str, str, str], int] = defaultdict(int)
        with self._lock:
            if self._store is not None:
                self._store.save(self._series)
            for (method, status_class, route, side), red in sorted(self._series.items()):
                requests.add_metric([method, status_class, route, side], red.requests)
                error_totals[(method, route, side)] += red.errors
                cumulative, buckets = 0, []
                for bound, n in zip(_HTTP_BUCKETS, red.buckets):
                    cumulative += n
                    buckets.append((repr(bound), cumulative))
                buckets.append(("+Inf", red.timed))
                durations.add_metric([method, status_class, route, side], buckets, red.seconds)
        for key, n in sorted(error_totals.items()):
            errors.add_metric(list(key), n)
        yield from (requests, errors, durations, lost_events(self.name, "http", self._tracer.lost),
                    received_events(self.name, "http", self._tracer.received))

    def close(self) -> None:
        if self._tracer is not None:
            self._tracer.close()
            self._tracer = None
        if self._store is not None:
            with self._lock:
                self._store.save(self._series)
            self._store.close()
            self._store = None


def pin_subdir(pin_dir: str, *parts: str) -> str:
    """A source's own directory under the agent's pins. bpffs refuses names with a dot (EPERM), so a
    path (libc.so.6, eth0.100) keeps only letters, digits, - and _."""
    return os.path.join(pin_dir, "-".join(re.sub(r"[^A-Za-z0-9_-]", "_", p) for p in parts))
