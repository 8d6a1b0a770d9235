"""What a tool that reports `missed` must have seen. `missed` counts the runs of its BPF programs the kernel
skipped (Program.missed_runs: another BPF program was running on that CPU), on the whole machine, so it bounds
what this test's workload can have lost from above.

With no skipped run, every expected event is seen exactly once and nothing else is. A skipped run spoils at
most `per_run` events, each of which is then absent or seen damaged (a request whose response went unseen has
no status, and no latency for a filter to drop it by). With `missed` skipped runs, at most missed * per_run
expected events may be absent, and at most as many events seen may be ones not expected."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable


def assert_complete(seen: Iterable[Hashable], expected: Iterable[Hashable], *, missed: int, per_run: int = 1,
                    ordered: bool = False) -> None:
    """`seen` is `expected` (as multisets) but for what `missed` skipped runs could take; `ordered`: the events
    seen keep the order they were made in (one thread's calls reach a ring in program order)."""
    seen, expected = list(seen), list(expected)
    seen_counts, expected_counts = Counter(seen), Counter(expected)
    absent, unexpected = expected_counts - seen_counts, seen_counts - expected_counts
    allowed = missed * per_run
    assert sum(absent.values()) <= allowed, (
        f"{sum(absent.values())} expected events not seen, {allowed} allowed by {missed} skipped program runs: "
        f"{list(absent.elements())}; seen {seen}")
    assert sum(unexpected.values()) <= allowed, (
        f"events seen that were not made (or seen twice): {list(unexpected.elements())}, {allowed} allowed by "
        f"{missed} skipped program runs; expected {expected}")
    if ordered:
        kept, remaining = [event for event in seen if event in expected_counts], iter(expected)
        assert all(event in remaining for event in kept), f"out of order: seen {kept}, made {expected}"


def assert_counted(count: int, expected: int, *, missed: int, per_run: int = 1) -> None:
    """A count the kernel kept of `expected` events: all of them, but for what `missed` skipped runs took."""
    assert expected - missed * per_run <= count <= expected, (
        f"counted {count} of {expected} events with {missed} skipped program runs")
