"""OTLP export against a real HTTP receiver: what a collector decodes must be what /metrics says."""

from __future__ import annotations

import errno
import logging
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1 import metrics_pb2
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily

from bpfscope.agent.otlp import EXPORT_TIMEOUT, OtlpExporter
from bpfscope.errors import BpfscopeError


class Receiver:
    """An OTLP/HTTP metrics endpoint that keeps what it was sent, and answers `status` to it."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], ExportMetricsServiceRequest]] = []
        self.status = 200
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportMetricsServiceRequest()
                request.ParseFromString(body)
                with receiver.changed:
                    receiver.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, request))
                    receiver.changed.notify_all()
                self.send_response(receiver.status if self.path == "/v1/metrics" else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def wait_for(self, count: int, timeout: float = 5.0) -> int:
        with self.changed:
            self.changed.wait_for(lambda: len(self.requests) >= count, timeout)
            return len(self.requests)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


class Kernel:
    """Stands in for the agent's eBPF-backed collectors: families built at read time."""

    def __init__(self) -> None:
        self.tcp = 42

    def collect(self) -> Iterator[Any]:
        packets = CounterMetricFamily("bpfscope_packets", "Packets seen.", labels=["iface", "proto"])
        packets.add_metric(["eth0", "tcp"], self.tcp)
        packets.add_metric(["eth0", "udp"], 7)
        yield packets
        yield GaugeMetricFamily("bpfscope_flows", "Flows tracked.", value=3)
        latency = HistogramMetricFamily("bpfscope_latency", "Call latency.", labels=["func"], unit="seconds")
        latency.add_metric(["vfs_read"], [("0.001", 2), ("0.01", 5), ("0.1", 9), ("+Inf", 10)], sum_value=0.25)
        yield latency
        yield InfoMetricFamily("bpfscope_build", "Agent build.", value={"version": "0.1.0"})


@pytest.fixture
def kernel() -> Kernel:
    return Kernel()


@pytest.fixture
def registry(kernel: Kernel) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(kernel)
    return registry


def metrics_of(request: ExportMetricsServiceRequest) -> dict[str, metrics_pb2.Metric]:
    (resource_metrics,) = request.resource_metrics
    (scope_metrics,) = resource_metrics.scope_metrics
    return {m.name: m for m in scope_metrics.metrics}


def attributes(kvs: Any) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in kvs}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_export_once_sends_counters_gauges_histograms(receiver: Receiver, registry: CollectorRegistry) -> None:
    exporter = OtlpExporter(registry, receiver.url, headers={"x-api-key": "secret"},
                            resource={"deployment.environment": "test"})
    try:
        assert exporter.export_once()
    finally:
        exporter.stop()
    path, headers, request = receiver.requests[0]
    assert path == "/v1/metrics"  # a bare endpoint gets the metrics path
    assert headers["x-api-key"] == "secret"
    resource = attributes(request.resource_metrics[0].resource.attributes)
    assert resource["service.name"] == "bpfscope-agent"
    assert resource["host.name"] == socket.gethostname()
    assert resource["deployment.environment"] == "test"
    assert request.resource_metrics[0].scope_metrics[0].scope.name == "bpfscope.agent"

    metrics = metrics_of(request)
    assert set(metrics) == {"bpfscope_packets", "bpfscope_flows", "bpfscope_latency_seconds", "bpfscope_build_info"}

    packets = metrics["bpfscope_packets"]
    assert packets.WhichOneof("data") == "sum" and packets.description == "Packets seen."
    assert packets.sum.is_monotonic
    assert packets.sum.aggregation_temporality == metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
    by_proto = {attributes(p.attributes)["proto"]: p for p in packets.sum.data_points}
    assert attributes(by_proto["tcp"].attributes) == {"iface": "eth0", "proto": "tcp"}
    assert (by_proto["tcp"].as_int, by_proto["udp"].as_int) == (42, 7)
    tcp = by_proto["tcp"]
    assert 0 < tcp.start_time_unix_nano <= tcp.time_unix_nano <= time.time_ns()

    flows = metrics["bpfscope_flows"]
    assert flows.WhichOneof("data") == "gauge"
    assert [p.as_int for p in flows.gauge.data_points] == [3]

    build = metrics["bpfscope_build_info"]
    assert build.WhichOneof("data") == "gauge"
    assert attributes(build.gauge.data_points[0].attributes) == {"version": "0.1.0"}

    latency = metrics["bpfscope_latency_seconds"]
    assert latency.WhichOneof("data") == "histogram" and latency.unit == "s"
    assert latency.histogram.aggregation_temporality == metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
    (point,) = latency.histogram.data_points
    assert attributes(point.attributes) == {"func": "vfs_read"}
    assert list(point.explicit_bounds) == [0.001, 0.01, 0.1]
    assert list(point.bucket_counts) == [2, 3, 4, 1]
    assert (point.count, point.sum) == (10, 0.25)
    assert not point.HasField("min") and not point.HasField("max")  # unknown: left unset


def test_start_exports_every_interval_and_stop_flushes(receiver: Receiver, registry: CollectorRegistry,
                                                       kernel: Kernel) -> None:
    exporter = OtlpExporter(registry, receiver.url + "/v1/metrics", interval=0.2)
    exporter.start()
    try:
        assert receiver.wait_for(3) >= 3
        kernel.tcp = 1000
    finally:
        exporter.stop()
    sent = len(receiver.requests)
    last = metrics_of(receiver.requests[-1][2])["bpfscope_packets"]
    assert 1000 in [p.as_int for p in last.sum.data_points]  # the final flush saw the last count
    start_times = {p.start_time_unix_nano for _, _, r in receiver.requests
                   for p in metrics_of(r)["bpfscope_packets"].sum.data_points}
    assert len(start_times) == 1  # cumulative from one start
    time.sleep(0.5)
    assert len(receiver.requests) == sent  # the thread is gone


def test_unreachable_endpoint_warns_once_and_stop_returns(registry: CollectorRegistry,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    exporter = OtlpExporter(registry, f"http://127.0.0.1:{closed_port()}/v1/metrics", interval=0.2)
    with caplog.at_level(logging.WARNING):
        assert exporter.export_once() is False
    ours = [r for r in caplog.records if r.name == "bpfscope.agent"]
    assert [r.levelno for r in ours] == [logging.WARNING]
    assert "OTLP export to http://127.0.0.1:" in ours[0].getMessage()
    assert "Connection refused" in ours[0].getMessage()
    assert [r for r in caplog.records if r.name.startswith("opentelemetry")] == []  # quoted, not repeated

    exporter.start()
    time.sleep(0.3)  # an export is in flight
    began = time.monotonic()
    exporter.stop()
    assert time.monotonic() - began < 3


def test_a_collector_answering_503_costs_an_export_timeout_not_a_minute(receiver: Receiver,
                                                                        registry: CollectorRegistry) -> None:
    """The SDK retries a 503 with growing backoffs; from opentelemetry 1.35 (the floor) its timeout covers them,
    so an export, and the flush at stop(), each end within EXPORT_TIMEOUT (1.34 retried for over a minute)."""
    receiver.status = 503
    exporter = OtlpExporter(registry, receiver.url)
    began = time.monotonic()
    assert exporter.export_once() is False
    exporter.stop()
    assert time.monotonic() - began < 2 * EXPORT_TIMEOUT + 1
    assert len(receiver.requests) >= 2  # retried within the timeout


def test_broken_collector_is_a_failed_export_not_an_exception(receiver: Receiver,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def collect(self) -> Iterator[Any]:
            raise OSError(errno.EBADF, "map fd closed")

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Broken())
    exporter = OtlpExporter(registry, receiver.url)
    try:
        assert exporter.export_once() is False
    finally:
        exporter.stop()
    assert receiver.requests == []
    warnings = [r.getMessage() for r in caplog.records if r.name == "bpfscope.agent"]
    assert len(warnings) == 2 and all("map fd closed" in w for w in warnings)  # export_once's and stop's flush


def test_missing_extra_is_enopkg(monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.metric_exporter", None)
    with pytest.raises(BpfscopeError) as raised:
        OtlpExporter(registry, "http://127.0.0.1:4318")
    assert raised.value.errno == errno.ENOPKG
    assert "pip install 'bpfscope[otlp]'" in str(raised.value)


def test_import_does_not_load_opentelemetry() -> None:
    code = "import sys, bpfscope.agent.otlp; print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"
