"""The built-in tools as agent sources. Each reads its kernel counters once per scrape (batch map
lookups, summed over CPUs) and yields Prometheus metric families; a streaming tool's ring is drained
between scrapes (httptrace's requests are parsed from it as `bpfscope httptrace` does). A tool on the
Tool base is a ToolSource (its families are its own, Tool.metrics).

Names follow Prometheus conventions: `bpfscope_<what>_total` for counters, base units (bytes,
seconds). Labels with unbounded values are bounded: flows to the top N by bytes, HTTP routes to
`max_routes` (then "other"), containers by the resolver's own bound."""

from __future__ import annotations

import logging
import os
import re
import threading
from typing import Any, Iterator, Mapping, Optional

from prometheus_client.core import CounterMetricFamily, Metric

from ..tools._base import Kind, Tool
from .containers import ContainerResolver
from .source import Source

__all__ = [
    "ToolSource",
    "lost_events", "received_events", "unseen_families",
]



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
    families (Tool.metrics, which may label by container through `containers`) and, for every tool, what
    it could not see: lost records and skipped runs. A streaming tool is pumped between scrapes: the
    agent's reader thread polls it and tallies each batch (Tool.tally), under a lock that a scrape's
    metrics() takes too."""

    def __init__(self, tool: type[Tool], key: str, options: Mapping[str, Any], pin_dir: str,
                 containers: Optional[ContainerResolver] = None) -> None:
        super().__init__(pin_dir)
        self.name = key
        self.tool = tool
        self.options = {**options, **tool.AGENT_VALUES}
        self.containers = containers
        self._tool: Optional[Tool] = None
        self._lock = threading.Lock()

    def open(self) -> None:
        tool = self.tool.from_options(self.options, pin_dir=self.pin_dir)
        tool.containers = self.containers
        self._tool = tool.open()
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




def pin_subdir(pin_dir: str, *parts: str) -> str:
    """A source's own directory under the agent's pins. bpffs refuses names with a dot (EPERM), so a
    path (libc.so.6, eth0.100) keeps only letters, digits, - and _."""
    return os.path.join(pin_dir, "-".join(re.sub(r"[^A-Za-z0-9_-]", "_", p) for p in parts))
