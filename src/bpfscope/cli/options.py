"""Argument types and helpers shared by subcommands."""

from __future__ import annotations

import argparse
import contextlib
import signal
import time
from typing import Any, Iterator, Optional


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """SIGTERM ends the run the way Ctrl-C does: through KeyboardInterrupt, so every `with` detaches."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def ticks(interval: float, duration: Optional[float]) -> Iterator[None]:
    """Sleeps until each interval ends; the last tick falls at the end of the duration."""
    start = time.monotonic()
    end = start + duration if duration else float("inf")
    next_tick = start
    while True:
        next_tick = min(next_tick + interval, end)
        time.sleep(max(0.0, next_tick - time.monotonic()))
        yield
        if next_tick >= end:
            return
