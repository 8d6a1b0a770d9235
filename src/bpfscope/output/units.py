"""Numbers as people read them: 1.2k, 3.4M; bits per second as 12.3 Mbit/s."""

from __future__ import annotations

_PREFIXES = ("", "k", "M", "G", "T", "P")


def si(value: float, unit: str = "") -> str:
    magnitude = 0
    while abs(value) >= 1000 and magnitude < len(_PREFIXES) - 1:
        value /= 1000
        magnitude += 1
    text = f"{value:.0f}" if magnitude == 0 else f"{value:.1f}"
    return f"{text}{_PREFIXES[magnitude]}{unit}"


def count_of(n: int, noun: str, plural: str = "") -> str:
    """`1 open`, `2 opens`, `12,345 comms`: a count with its noun in the right number."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"
