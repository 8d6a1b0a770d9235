"""The agent's health: /healthz (200 while every source reads, 503 naming those that do not, without reading a
map), bpfscope_source_up per source, and the process_* metrics of the agent itself."""

from __future__ import annotations

import errno
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from bpfscope.agent import agent as agent_module
from bpfscope.agent.agent import Agent
from bpfscope.agent.config import parse_config
from bpfscope.agent.source import Source
from bpfscope.agent.sources import pin_subdir

from .agentproc import AgentProcess, free_port


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(port: int, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    _, text = get(port, "/metrics")
    return {tuple(sorted(s.labels.items())): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name}


def test_a_running_agent_is_healthy_and_reports_its_process(veth_pair, bpffs_dir, tmp_path):
    agent = AgentProcess({"pin_dir": str(bpffs_dir / "agent"), "tools": {"packets": {"interfaces": [veth_pair.host]},
                                                                          "opens": True}}, tmp_path)
    try:
        assert get(agent.port, "/healthz") == (200, "ok\n")
        assert samples(agent.port, "bpfscope_source_up") == {
            (("source", f"packets-{veth_pair.host}"), ("tool", "packets")): 1,
            (("source", "opens"), ("tool", "opens")): 1,
        }
        assert samples(agent.port, "process_open_fds")[()] > 0  # prometheus_client's ProcessCollector
        assert samples(agent.port, "process_resident_memory_bytes")[()] > 0
        assert samples(agent.port, "process_cpu_seconds_total")[()] > 0
    finally:
        agent.stop()
    assert agent.proc.returncode == 0, agent.stderr


class Flaky(Source):
    """A source whose reads fail when the test says: no kernel object fails to read on demand."""

    name = "flaky"
    streams = True

    def __init__(self, pin_dir: str) -> None:
        super().__init__(pin_dir)
        self.maps_broken = False
        self.ring_broken = False
        self.collected = 0  # scrapes that read its maps

    def open(self) -> None:
        os.makedirs(self.pin_dir)  # as a real source pins its maps there

    def collect(self) -> Iterator[Metric]:
        self.collected += 1
        if self.maps_broken:
            raise OSError(errno.EBADF, "its map is gone")
        family = CounterMetricFamily("bpfscope_flaky_reads", "Reads of the test's source")
        family.add_metric([], self.collected)
        yield family

    def pump(self, timeout_ms: int) -> None:
        time.sleep(timeout_ms / 1000)
        if self.ring_broken:
            raise OSError(errno.EIO, "its ring is gone")

    def close(self) -> None:
        pass


@pytest.fixture
def flaky_agent(bpffs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Agent, Flaky]]:
    """An agent in this process serving one Flaky source on a free port."""
    config = parse_config({"listen": f"127.0.0.1:{free_port()}", "pin_dir": str(bpffs_dir / "agent"),
                           "tools": {"opens": True}})
    flaky = Flaky(pin_subdir(config.pin_dir, "flaky"))
    monkeypatch.setattr(agent_module, "build_sources", lambda config, resolver: [flaky])
    agent = Agent(config)
    agent.start()
    try:
        agent.serve()
        yield agent, flaky
    finally:
        agent.stop()


def _until(condition, what: str, timeout: float = 5) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_healthz_names_a_source_whose_maps_cannot_be_read_and_reads_none(flaky_agent):
    agent, flaky = flaky_agent
    port = int(agent.config.listen.rpartition(":")[2])
    up = (("source", "flaky"), ("tool", "flaky"))
    for _ in range(3):
        assert get(port, "/healthz") == (200, "ok\n")
    assert flaky.collected == 0  # a probe reads no map

    flaky.maps_broken = True
    assert samples(port, "bpfscope_source_up") == {up: 0}
    assert get(port, "/healthz") == (503, "unhealthy: flaky: cannot read its maps: [Errno 9] its map is gone\n")
    flaky.maps_broken = False
    assert samples(port, "bpfscope_source_up") == {up: 1}  # the next scrape that reads clears it
    assert get(port, "/healthz") == (200, "ok\n")


def test_healthz_names_a_source_whose_ring_cannot_be_drained(flaky_agent):
    agent, flaky = flaky_agent
    port = int(agent.config.listen.rpartition(":")[2])
    flaky.ring_broken = True
    _until(lambda: get(port, "/healthz")[0] == 503, "/healthz saying the ring failed")
    assert get(port, "/healthz")[1] == "unhealthy: flaky: cannot read its ring buffer: [Errno 5] its ring is gone\n"
    assert samples(port, "bpfscope_source_up") == {(("source", "flaky"), ("tool", "flaky")): 0}
    flaky.ring_broken = False
    _until(lambda: get(port, "/healthz") == (200, "ok\n"), "/healthz healthy once the ring drains again")
