"""OTLP push of the agent's metrics: the same families /metrics serves, read from the Prometheus
registry at each interval and handed to the OpenTelemetry SDK's OTLP/HTTP exporter.

Nothing is aggregated here: the kernel already counts, so counters become cumulative monotonic
sums, gauges (and info, stateset, unknown families) gauges, and the cumulative `le` buckets of a
histogram per-bucket counts. Summaries and gauge histograms have no counterpart in the SDK's data
model and are left out. opentelemetry is imported only when an exporter is made, so the agent pays
nothing for it while OTLP is off."""

from __future__ import annotations

import errno
import logging
import math
import socket
import threading
import time
from types import MappingProxyType
from typing import TYPE_CHECKING, Iterable, Iterator, Mapping, Optional
from urllib.parse import urlsplit

from ..__about__ import __version__
from ..errors import BpfscopeError

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import HistogramDataPoint, MetricsData, NumberDataPoint
    from opentelemetry.sdk.metrics.export import Metric as OtelMetric
    from opentelemetry.sdk.resources import Resource
    from prometheus_client.metrics_core import Metric as PromMetric
    from prometheus_client.registry import CollectorRegistry
    from prometheus_client.samples import Sample

__all__ = ["OtlpExporter", "EXPORT_TIMEOUT"]

#: seconds one export may take, retries included: stop() waits for at most an export in flight and
#: the final one, so it returns within about twice this even when the collector hangs. Above the
#: SDK's first retry backoff (at most 1.2 s), so a refused connection is retried once and its
#: reason logged rather than a bare "timeout".
EXPORT_TIMEOUT = 1.5

_log = logging.getLogger("bpfscope.agent")
_SDK_LOGGER = "opentelemetry.exporter.otlp.proto.http.metric_exporter"
_NO_MAPPING: Mapping[str, str] = MappingProxyType({})
_GAUGE_TYPES = ("gauge", "info", "stateset", "unknown")
# Prometheus base units to UCUM, which OTLP units are; anything else is passed on as it is.
_UNITS = {"seconds": "s", "bytes": "By", "ratio": "1"}


class _HeldBack(logging.Filter):
    """Keeps the SDK's own log lines of an export running in this thread out of the log, so that a
    failed export is the one warning line of ours that quotes them."""

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    def hold(self) -> list[str]:
        lines: list[str] = []
        self._local.lines = lines
        return lines

    def release(self) -> None:
        self._local.lines = None

    def filter(self, record: logging.LogRecord) -> bool:
        lines: Optional[list[str]] = getattr(self._local, "lines", None)
        if lines is None:
            return True
        lines.append(record.getMessage())
        return False


class OtlpExporter:
    """Pushes everything in `registry` to the OTLP/HTTP `endpoint` every `interval` seconds.

    `endpoint` is the metrics URL (`http://collector:4318/v1/metrics`); one without a path gets
    `/v1/metrics`, as OTEL_EXPORTER_OTLP_ENDPOINT does. `headers` go with every request (an API
    key); `resource` adds to or overrides the resource attributes (service.name, host.name)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        endpoint: str,
        *,
        interval: float = 15.0,
        headers: Mapping[str, str] = _NO_MAPPING,
        resource: Mapping[str, str] = _NO_MAPPING,
    ) -> None:
        try:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        except ImportError as error:
            raise BpfscopeError(
                errno.ENOPKG, "OTLP export needs the otlp extra: pip install 'bpfscope[otlp]'"
            ) from error
        self.registry = registry
        self.endpoint = _metrics_url(endpoint)
        self.interval = interval
        self._exporter = OTLPMetricExporter(endpoint=self.endpoint, headers=dict(headers), timeout=EXPORT_TIMEOUT)
        self._resource: Resource = Resource.create(
            {"service.name": "bpfscope-agent", "host.name": socket.gethostname(), **resource}
        )
        self._scope = InstrumentationScope("bpfscope.agent", __version__)
        # Where every cumulative series starts: the kernel may have counted since earlier (pinned maps
        # outlive the agent), but a backend has seen nothing of ours before this.
        self._start_ns = time.time_ns()
        self._lock = threading.Lock()  # one export at a time: the thread's and export_once()'s
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._stopped = False
        self._held_back = _HeldBack()
        logging.getLogger(_SDK_LOGGER).addFilter(self._held_back)

    def start(self) -> None:
        """Exports every `interval` seconds from a daemon thread until stop()."""
        if self._thread is not None or self._stopped:
            raise RuntimeError("an OtlpExporter is started once")
        self._thread = threading.Thread(target=self._run, name="bpfscope-otlp", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            self.export_once()

    def export_once(self) -> bool:
        """Reads the registry and exports it once; False (and one warning logged) if that failed.
        Never raises: a broken collector or collector endpoint must not take the agent down."""
        from opentelemetry.sdk.metrics.export import MetricExportResult

        with self._lock:
            lines = self._held_back.hold()
            try:
                done = self._exporter.export(self._metrics_data()) is MetricExportResult.SUCCESS
            except Exception as error:  # a collector's collect() failed
                done = False
                lines.append(f"{type(error).__name__}: {error}")
            finally:
                self._held_back.release()
        if not done:
            _log.warning(
                "OTLP export to %s failed: %s",
                self.endpoint, " | ".join(lines).replace("\n", " ") or "the exporter gave no reason",
            )
        return done

    def _metrics_data(self) -> MetricsData:
        """The registry's families now, in the SDK's data model."""
        from opentelemetry.sdk.metrics.export import MetricsData, ResourceMetrics, ScopeMetrics

        now = time.time_ns()
        metrics = [m for family in self.registry.collect() for m in _convert(family, self._start_ns, now)]
        scope = ScopeMetrics(scope=self._scope, metrics=metrics, schema_url="")
        resource = ResourceMetrics(resource=self._resource, scope_metrics=[scope], schema_url="")
        return MetricsData(resource_metrics=[resource])

    def stop(self) -> None:
        """Stops the thread, exports what was counted since the last export, and closes the
        connection. Returns within about 2 × EXPORT_TIMEOUT even when the collector is down."""
        if self._stopped:
            return
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        self.export_once()
        self._stopped = True
        self._exporter.shutdown()
        logging.getLogger(_SDK_LOGGER).removeFilter(self._held_back)


def _metrics_url(endpoint: str) -> str:
    return endpoint.rstrip("/") + "/v1/metrics" if urlsplit(endpoint).path in ("", "/") else endpoint


def _convert(family: PromMetric, start_ns: int, now_ns: int) -> Iterator[OtelMetric]:
    """The OTel metrics of one Prometheus family."""
    from opentelemetry.sdk.metrics.export import AggregationTemporality, Gauge, Histogram, Metric, Sum

    unit = _UNITS.get(family.unit, family.unit)
    cumulative = AggregationTemporality.CUMULATIVE
    if family.type == "counter":
        points = [_number(s, start_ns, now_ns) for s in family.samples if s.name.endswith("_total")]
        if points:
            name = family.name.removesuffix("_total")
            yield Metric(name, family.documentation, unit, Sum(points, cumulative, is_monotonic=True))
    elif family.type in _GAUGE_TYPES:
        # Grouped by sample name: an info family `build` has samples `build_info`, the name users know.
        by_name: dict[str, list[NumberDataPoint]] = {}
        for sample in family.samples:
            by_name.setdefault(sample.name, []).append(_number(sample, start_ns, now_ns))
        for name, points in by_name.items():
            yield Metric(name, family.documentation, unit, Gauge(points))
    elif family.type == "histogram":
        points_h = _histogram_points(family.name, family.samples, start_ns, now_ns)
        if points_h:
            yield Metric(family.name, family.documentation, unit, Histogram(points_h, cumulative))


def _number(sample: Sample, start_ns: int, now_ns: int) -> NumberDataPoint:
    from opentelemetry.sdk.metrics.export import NumberDataPoint

    return NumberDataPoint(attributes=dict(sample.labels), start_time_unix_nano=start_ns, time_unix_nano=now_ns,
                           value=sample.value)


def _histogram_points(name: str, samples: Iterable[Sample], start_ns: int, now_ns: int) -> list[HistogramDataPoint]:
    """One data point per label set: the `_bucket` samples' cumulative counts become per-bucket
    counts between the finite `le` bounds (the last bucket is the +Inf one)."""
    from opentelemetry.sdk.metrics.export import HistogramDataPoint

    buckets: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    sums: dict[tuple[tuple[str, str], ...], float] = {}
    for sample in samples:
        labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
        if sample.name == name + "_bucket":
            buckets.setdefault(labels, []).append((float(sample.labels["le"]), sample.value))
        elif sample.name == name + "_sum":
            sums[labels] = sample.value
    points = []
    for labels, cumulative in buckets.items():
        cumulative.sort()
        counts, seen = [], 0
        for _, below in cumulative:
            below = max(int(below), seen)  # a map read racing an update must not give a negative count
            counts.append(below - seen)
            seen = below
        bounds = [le for le, _ in cumulative if not math.isinf(le)]
        if len(counts) == len(bounds):  # no +Inf bucket: nothing was counted above the last bound
            counts.append(0)
        points.append(HistogramDataPoint(
            attributes=dict(labels), start_time_unix_nano=start_ns, time_unix_nano=now_ns, count=seen,
            # OTLP's sum, min and max are optional: None leaves them unset (the SDK's encoder passes
            # them to the protobuf constructor as they are), which is right for values we do not know.
            sum=sums.get(labels),  # type: ignore[arg-type]
            bucket_counts=counts, explicit_bounds=bounds,
            min=None, max=None,  # type: ignore[arg-type]
        ))
    return points
