"""Helpers the subcommands share: signals and summary wording. The option value
types are the tools' (tools/_base.py), read by the CLI and the agent alike."""

from __future__ import annotations

import contextlib
import signal
from typing import Any, Iterator


class StopFlag:
    """What the signals asked for, read by the loop between polls."""

    def __init__(self) -> None:
        self.requested = False  # SIGTERM or Ctrl-C: stop
        self.hangup = False  # SIGHUP, where caught (catch_hangup): the loop clears it once it has acted on it


@contextlib.contextmanager
def stop_flag() -> Iterator[StopFlag]:
    """SIGTERM and Ctrl-C only set a flag the loop checks between polls, so a stop never cuts a line
    in half and what the ring holds is still read, printed and counted; nothing is done inside a
    handler. The previous handlers come back on exit."""
    flag = StopFlag()

    def stop(signum: int, frame: Any) -> None:
        flag.requested = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def catch_hangup(flag: StopFlag) -> Iterator[None]:
    """SIGHUP sets `flag.hangup` for the loop to act on, instead of ending the process; the previous
    handler comes back on exit."""

    def hang_up(signum: int, frame: Any) -> None:
        flag.hangup = True

    previous = signal.signal(signal.SIGHUP, hang_up)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)


def unseen(summary: dict[str, Any]) -> str:
    """"N lost" for a summary line, and the program runs the kernel skipped when there were any."""
    missed = f", {summary['missed']:,} program runs skipped by the kernel" if summary["missed"] else ""
    return f"{summary['lost']:,} lost{missed}"
