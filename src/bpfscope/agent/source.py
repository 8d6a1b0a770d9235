"""What the agent runs: a Source is one tool (or one program of the user's) whose kernel state the
agent exports. Counters live in the kernel and are read at each scrape; a Source that streams
events through a ring buffer also has `pump()`, which the agent's reader thread calls to drain it."""

from __future__ import annotations

import abc
from typing import Iterable

from prometheus_client.core import Metric

__all__ = ["Source"]


class Source(abc.ABC):
    """`open()` loads and attaches (maps pinned under `pin_dir` are taken over, so counts carry on
    from an earlier run); `collect()` yields metric families for one scrape; `close()` detaches."""

    #: a short name for logs and the `tool` label of its ring buffer's lost-events counter
    name: str = ""
    #: whether `pump()` must be called between scrapes (a ring buffer to drain)
    streams: bool = False

    def __init__(self, pin_dir: str) -> None:
        self.pin_dir = pin_dir

    @abc.abstractmethod
    def open(self) -> None: ...

    @abc.abstractmethod
    def collect(self) -> Iterable[Metric]: ...

    def pump(self, timeout_ms: int) -> None:
        """Drains what streamed in, waiting up to `timeout_ms` for it; only streaming sources have it."""
        raise NotImplementedError(f"{self.name} does not stream")

    @abc.abstractmethod
    def close(self) -> None: ...
