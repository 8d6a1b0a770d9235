"""`bpfscope bench`: measurements on the user's own kernel, each beside its peer or reference and
its target, as ratios from one run. Each benchmark module has `run() -> list[Figure]`."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Optional

__all__ = ["Figure", "Rounds", "rounds"]

Rounds = tuple[float, float]  # (lowest, highest) over a benchmark's rounds


def rounds(values: Iterable[float]) -> tuple[float, Rounds]:
    """The median of per-round values and their range: the one statistic every figure and its
    reference are given in, so neither side is a best-of-N set against the other's typical."""
    values = list(values)
    return statistics.median(values), (min(values), max(values))


@dataclass(frozen=True)
class Figure:
    """One measured figure. `reference` names what it is compared with (a peer tool, a C consumer,
    an empty program) and `reference_value` is that one's figure from the same run."""

    benchmark: str  # "ringbuf", "maps", "xdp", "startup"
    name: str  # "batch reader"
    value: float
    unit: str  # "M events/s", "ms", "ns/packet", "MiB"
    higher_is_better: bool
    target: Optional[float] = None  # the target in `unit`, None where there is none
    reference: Optional[str] = None
    reference_value: Optional[float] = None
    note: str = ""
    # The range over rounds of `value` and of `reference_value` (each the median of those rounds);
    # None for a figure taken once.
    spread: Optional[Rounds] = None
    reference_spread: Optional[Rounds] = None

    @property
    def ratio(self) -> Optional[float]:
        """value / reference_value, where both exist."""
        if self.reference_value in (None, 0) or self.reference_value is None:
            return None
        return self.value / self.reference_value

    @property
    def met(self) -> Optional[bool]:
        if self.target is None:
            return None
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "met": self.met}
