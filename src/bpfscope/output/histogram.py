"""Log2 histograms as people know them from BCC: slot i counts values in [2^i, 2^(i+1)) (slot 0
also counts 0), printed as `low -> high : count |****|` lines, with count, average and percentiles.

Percentiles are estimates: the histogram only knows which bucket a value fell in, so a percentile is
interpolated linearly inside its bucket, and its bucket (`low`, `high`) bounds the true value.

`Durations` is what the tools' kernel histograms of time hold (`struct { u64 slots[64]; u64 count;
u64 sum_ns; }`): the slots in a `Unit`, and the exact number and total of the durations."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Optional, Sequence

__all__ = ["Durations", "Log2Histogram", "Percentile", "Unit", "bucket_bounds", "bucket_of"]

_STARS = 40


def bucket_bounds(slot: int) -> tuple[int, int]:
    """The smallest and largest value slot `slot` counts: 0 -> 1, 2 -> 3, 4 -> 7, ..."""
    return (0 if slot == 0 else 1 << slot), (1 << (slot + 1)) - 1


def bucket_of(value: int) -> int:
    """The slot a value lands in, as the kernel side computes it (floor of log2; 0 for 0)."""
    return max(int(value), 1).bit_length() - 1


@dataclass(frozen=True)
class Percentile:
    """p-th percentile: `value` interpolated within the bucket `low`..`high` that holds it."""

    p: float
    value: float
    low: int
    high: int


class Log2Histogram:
    """Counts per log2 slot of values in `unit` (as printed: "usecs", "nsecs", "msecs"), with the
    number and sum of the values when the producer keeps them (the average needs both)."""

    def __init__(self, slots: Sequence[int], unit: str, *, total: Optional[float] = None) -> None:
        self.slots = [int(s) for s in slots]
        self.unit = unit
        self.total = total  # sum of the values in `unit`, if known exactly

    @property
    def count(self) -> int:
        return sum(self.slots)

    @property
    def average(self) -> Optional[float]:
        if self.total is None or not self.count:
            return None
        return self.total / self.count

    def percentile(self, p: float) -> Optional[Percentile]:
        """The value below which p% of the counted values lie, interpolated within its bucket."""
        if not 0 <= p <= 100:
            raise ValueError(f"percentile {p} is not within 0..100")
        count = self.count
        if not count:
            return None
        rank = p / 100 * count
        seen = 0
        for slot, n in enumerate(self.slots):
            if not n:
                continue
            if seen + n >= rank:
                low, high = bucket_bounds(slot)
                value = low + (high - low) * max(rank - seen, 0) / n
                return Percentile(p, value, low, high)
            seen += n
        raise AssertionError("unreachable: the ranks add up to count")

    def lines(self) -> list[str]:
        """The histogram as BCC prints it: a header, then one line per slot up to the last used one.
        Empty histograms print nothing."""
        last = max((i for i, n in enumerate(self.slots) if n), default=-1)
        if last < 0:
            return []
        wide = last > 32
        header = ("               %-29s : count     distribution" if wide
                  else "     %-19s : count     distribution") % self.unit
        width, stars = (20, _STARS // 2) if wide else (10, _STARS)
        peak = max(self.slots)
        out = [header]
        for slot in range(last + 1):
            low, high = bucket_bounds(slot)
            n = self.slots[slot]
            bar = "*" * (stars * n // peak)
            out.append(f"{low:>{width}} -> {high:<{width}} : {n:<8} |{bar:<{stars}}|")
        return out

    def summary(self, percentiles: Sequence[float] = (50, 90, 99)) -> str:
        """`count 10, average 6,277.6 usecs, p50 ≈ 2,048, p90 ≈ 14,746, p99 ≈ 16,220 usecs (...)`."""
        parts = [f"count {self.count:,}"]
        if self.average is not None:
            parts.append(f"average {self.average:,.1f} {self.unit}")
        estimates = [q for q in (self.percentile(p) for p in percentiles) if q is not None]
        if estimates:
            values = ", ".join(f"p{q.p:g} ≈ {q.value:,.0f}" for q in estimates)
            parts.append(f"{values} {self.unit} (interpolated within log2 buckets)")
        return ", ".join(parts)

    def as_dict(self, percentiles: Sequence[float] = (50, 90, 99)) -> dict[str, Any]:
        """A JSON-ready view: the used buckets with their bounds, count, average, percentiles."""
        last = max((i for i, n in enumerate(self.slots) if n), default=-1)
        estimates = [q for q in (self.percentile(p) for p in percentiles) if q is not None]
        average = self.average
        return {
            "unit": self.unit,
            "count": self.count,
            "average": None if average is None else round(average, 3),
            "buckets": [{"low": bucket_bounds(i)[0], "high": bucket_bounds(i)[1], "count": self.slots[i]}
                        for i in range(last + 1)],
            "percentiles": {f"p{q.p:g}": {"estimate": round(q.value, 3), "low": q.low, "high": q.high}
                            for q in estimates},
        }

    def __sub__(self, earlier: Log2Histogram) -> Log2Histogram:
        total = None if self.total is None or earlier.total is None else self.total - earlier.total
        return Log2Histogram([a - b for a, b in zip(self.slots, earlier.slots)], self.unit, total=total)


class Unit(enum.Enum):
    """The unit of a histogram of durations; the kernel divides each duration by it before taking the log2."""

    NSECS = "ns"
    USECS = "us"
    MSECS = "ms"

    @property
    def ns(self) -> int:
        return {Unit.NSECS: 1, Unit.USECS: 1000, Unit.MSECS: 1_000_000}[self]

    @property
    def label(self) -> str:
        return {Unit.NSECS: "nsecs", Unit.USECS: "usecs", Unit.MSECS: "msecs"}[self]


@dataclass(frozen=True)
class Durations:
    """Durations counted in the kernel: per log2 slot of the duration in `unit` (slot i: [2^i, 2^(i+1))
    units), how many, and their exact total in ns. Readings subtract (an interval) and add (CPUs, or
    the keys folded into "other")."""

    unit: Unit
    slots: tuple[int, ...] = ()
    count: int = 0
    sum_ns: int = 0

    @classmethod
    def from_row(cls, unit: Unit, row: Any) -> Durations:
        """From a kernel value with fields slots, count and sum_ns (a numpy record)."""
        return cls(unit, tuple(int(n) for n in row["slots"]), int(row["count"]), int(row["sum_ns"]))

    @property
    def histogram(self) -> Log2Histogram:
        return Log2Histogram(self.slots, self.unit.label, total=self.sum_ns / self.unit.ns)

    def as_dict(self) -> dict[str, Any]:
        """The histogram's JSON view, and the exact total."""
        return {**self.histogram.as_dict(), "sum_ns": self.sum_ns}

    def _combine(self, other: Durations, sign: int) -> Durations:
        assert self.unit is other.unit, (self.unit, other.unit)
        width = max(len(self.slots), len(other.slots))
        mine, theirs = (tuple(s) + (0,) * (width - len(s)) for s in (self.slots, other.slots))
        return Durations(self.unit, tuple(a + sign * b for a, b in zip(mine, theirs)),
                         self.count + sign * other.count, self.sum_ns + sign * other.sum_ns)

    def __add__(self, other: Durations) -> Durations:
        return self._combine(other, 1)

    def __sub__(self, earlier: Durations) -> Durations:
        return self._combine(earlier, -1)

    def prometheus_buckets(self, exported: range) -> list[tuple[str, float]]:
        """Cumulative (upper bound in seconds, count) pairs for a Prometheus histogram: one bucket per
        slot in `exported` (the slots below it fall into the first), then +Inf. A fixed set of slots, so
        that every scrape has the same buckets."""
        cumulative = sum(self.slots[: exported.start])
        buckets: list[tuple[str, float]] = []
        for slot in exported:
            cumulative += self.slots[slot] if slot < len(self.slots) else 0
            buckets.append((repr((1 << (slot + 1)) * self.unit.ns / 1e9), cumulative))
        buckets.append(("+Inf", sum(self.slots)))
        return buckets
