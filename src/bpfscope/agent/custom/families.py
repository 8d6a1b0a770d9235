"""A custom program's metrics as Prometheus families, from one batch of their map's keys and values:
rows whose labels decode alike are added together, histogram buckets made cumulative."""

from __future__ import annotations

from typing import Any

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from .labels import Label
from .spec import MetricSpec

__all__ = ["Exported"]


def _sum_by(group: np.ndarray[Any, Any], count: int, column: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Adds `column` up per group, in integers where it is integers (exact past 2^53)."""
    kind = column.dtype.kind
    total_type = np.float64 if kind == "f" else np.uint64 if kind in "ub" else np.int64
    totals = np.zeros(count, dtype=total_type)
    np.add.at(totals, group, column.astype(total_type))
    return totals


class Exported:
    """One metric of the YAML over its map's batch of keys and values."""

    def __init__(self, spec: MetricSpec, labels: list[Label]) -> None:
        self.spec = spec
        self.labels = labels
        self.label_names = [label.spec.name for label in labels]

    def _groups(self, keys: np.ndarray[Any, Any]) -> tuple[list[tuple[str, ...]], np.ndarray[Any, Any]]:
        """The distinct label tuples, and for each row the index of its tuple."""
        if not self.labels:
            return [()], np.zeros(len(keys), dtype=np.intp)
        if not len(keys):
            return [], np.zeros(0, dtype=np.intp)
        texts, codes = zip(*(label.read(keys) for label in self.labels))
        rows, group = np.unique(np.stack(codes, axis=1), axis=0, return_inverse=True)
        names = [tuple(texts[i][code] for i, code in enumerate(row)) for row in rows.tolist()]
        return names, group.reshape(-1)

    def family(self, keys: np.ndarray[Any, Any], values: np.ndarray[Any, Any]) -> Metric:
        spec = self.spec
        names, group = self._groups(keys)
        order = sorted(range(len(names)), key=names.__getitem__)
        column = values if spec.value is None else values[spec.value]
        if spec.kind == "histogram":
            return self._histogram(keys, values, column, names, group, order)
        totals = _sum_by(group, len(names), column).tolist()
        family = (CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily)(
            spec.name, spec.help, labels=self.label_names)
        for g in order:
            family.add_metric(list(names[g]), totals[g] * spec.multiplier)
        return family

    def _histogram(self, keys: np.ndarray[Any, Any], values: np.ndarray[Any, Any], counts: np.ndarray[Any, Any],
                   names: list[tuple[str, ...]], group: np.ndarray[Any, Any], order: list[int]) -> Metric:
        spec = self.spec
        assert spec.buckets is not None and spec.bucket_field is not None
        slots = keys[spec.bucket_field].astype(np.int64)
        finite = spec.buckets.finite(int(slots.max()) if len(slots) else -1)
        index = np.where((slots >= 0) & (slots < finite), slots, finite)  # the rest: only in +Inf
        table = np.zeros((len(names), finite + 1), dtype=np.uint64)
        np.add.at(table, (group, index), counts.astype(np.uint64))
        cumulative = np.cumsum(table, axis=1).tolist()
        bounds = [repr(spec.buckets.upper(i) * spec.multiplier) for i in range(finite)] + ["+Inf"]
        sums = _sum_by(group, len(names), values[spec.sum_field]).tolist() if spec.sum_field else None
        family = HistogramMetricFamily(spec.name, spec.help, labels=self.label_names)
        for g in order:
            family.add_metric(list(names[g]), list(zip(bounds, cumulative[g])),
                              None if sums is None else sums[g] * spec.multiplier)
        return family
