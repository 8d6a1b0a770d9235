"""httptrace's RED series for the agent: requests, errors and a duration histogram per (method, status
class, route, side). They are counted in Python from the requests httptrace parses, not in the kernel,
so they are kept in a hash map made and pinned here (no program writes it): a restart takes them over
as it takes over the tools' own maps. Routes are bounded: ids in paths fold to `:id`, and past
`max_routes` a new route counts as "other"."""

from __future__ import annotations

import logging
import os
import re
import struct
from collections import defaultdict
from typing import TYPE_CHECKING, Iterable, Iterator, Optional

from .. import _libbpf
from ..maps import Map, MapType
from ..pin import ensure_pin_dir

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from .httptrace import Request

__all__ = ["BUCKETS", "Series", "normalize_route"]

# Durations: prometheus_client's default buckets, which cover 5 ms to 10 s.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_ROUTE_CACHE = 4096  # paths remembered with their route
_ROUTE_BYTES = 160  # a route label's longest, so the series keys fit their pinned map
_ID_SEGMENT = re.compile(r"^(?:\d+|[0-9a-fA-F]{8,}|[0-9a-fA-F-]{36})$")

_Key = tuple[str, str, str, str]  # method, status class, route, side


def normalize_route(path: str) -> str:
    """A request path as a route: the query dropped, and segments that are ids (numbers, long hex,
    UUIDs) replaced by `:id`, so /users/42/orders and /users/7/orders are one route."""
    path = path.split("?", 1)[0].split("#", 1)[0] or "/"
    return "/".join(":id" if _ID_SEGMENT.match(segment) else segment for segment in path.split("/"))


class _Red:
    """Requests, errors and a duration histogram of one series."""

    __slots__ = ("requests", "errors", "timed", "buckets", "seconds")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.timed = 0  # those with a response, whose duration is known
        self.buckets = [0] * len(BUCKETS)
        self.seconds = 0.0


class _Pinned:
    """The series' hash map, pinned at `path` (made there if it is not yet)."""

    KEY_BYTES = 192  # method, status class, route and side, NUL-separated
    VALUE = struct.Struct(f"<{3 + len(BUCKETS)}Qd")  # requests, errors, timed, buckets, seconds
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

    def load(self) -> dict[_Key, _Red]:
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

    def save(self, series: dict[_Key, _Red]) -> None:
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


class Series:
    """The RED series of the requests `add`ed; with `pin_path`, taken over from the map pinned there
    and written back to it at each `families()` and at `close()`."""

    def __init__(self, max_routes: int, pin_path: Optional[str] = None) -> None:
        self.max_routes = max_routes
        self._series: dict[_Key, _Red] = {}
        self._store = _Pinned(pin_path) if pin_path is not None else None
        if self._store is not None:
            try:
                self._series = self._store.load()
            except BaseException:
                self._store.close()
                raise
        self._routes = {route for _, _, route, _ in self._series if route != "other"}
        self._route_of: dict[str, str] = {}  # path → route, so a busy path is normalized once

    def _route(self, path: str) -> str:
        route = self._route_of.get(path)
        if route is None:
            if len(self._route_of) >= _ROUTE_CACHE:
                self._route_of.clear()
            route = self._route_of[path] = normalize_route(path)[:_ROUTE_BYTES]
        if route not in self._routes:
            if len(self._routes) >= self.max_routes:
                return "other"
            self._routes.add(route)
        return route

    def add(self, requests: Iterable[Request]) -> None:
        for request in requests:
            status_class = f"{request.status // 100}xx" if request.status else "none"
            key = (request.method, status_class, self._route(request.path), request.side)
            series = self._series.get(key) or self._series.setdefault(key, _Red())
            series.requests += 1
            if request.status is None or request.status >= 500:
                series.errors += 1
            if request.latency is not None:
                series.timed += 1
                series.seconds += request.latency
                for i, bound in enumerate(BUCKETS):
                    if request.latency <= bound:
                        series.buckets[i] += 1
                        break

    def families(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        labels = ["method", "status_class", "route", "side"]
        requests = CounterMetricFamily("bpfscope_http_requests", "HTTP requests seen, by method, status class "
                                       "(none: no response) and route", labels=labels)
        errors = CounterMetricFamily("bpfscope_http_request_errors", "HTTP requests answered 5xx or not at all",
                                     labels=["method", "route", "side"])
        durations = HistogramMetricFamily("bpfscope_http_request_duration_seconds", "From a request's first byte "
                                          "to its response's first byte", labels=labels)
        error_totals: dict[tuple[str, str, str], int] = defaultdict(int)
        if self._store is not None:
            self._store.save(self._series)
        for (method, status_class, route, side), red in sorted(self._series.items()):
            requests.add_metric([method, status_class, route, side], red.requests)
            error_totals[(method, route, side)] += red.errors
            cumulative, buckets = 0, []
            for bound, n in zip(BUCKETS, red.buckets):
                cumulative += n
                buckets.append((repr(bound), cumulative))
            buckets.append(("+Inf", red.timed))
            durations.add_metric([method, status_class, route, side], buckets, red.seconds)
        for key, n in sorted(error_totals.items()):
            errors.add_metric(list(key), n)
        yield from (requests, errors, durations)

    def close(self) -> None:
        """Writes the series back to their pinned map, and closes it; safe twice."""
        store, self._store = self._store, None
        if store is not None:
            try:
                store.save(self._series)
            finally:
                store.close()
