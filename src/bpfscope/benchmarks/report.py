"""Figures as text: one table per benchmark (value, target, met, reference, ratio side by side) or
one JSON line per figure. Also the machine a run was made on, for the header and the docs."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
from typing import Optional, Sequence

from . import Figure

__all__ = ["table", "json_lines", "machine", "number"]

_COLUMNS = ("figure", "value", "target", "met", "reference", "reference value", "ratio")


def number(value: float) -> str:
    """Three significant digits or so, thousands separated: 0.0194, 4.61, 29.5, 1,514."""
    if not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1 or magnitude == 0:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _with_unit(value: Optional[float], unit: str) -> str:
    return "" if value is None else f"{number(value)} {unit}"


def _target(figure: Figure) -> str:
    if figure.target is None:
        return ""
    return f"{'≥' if figure.higher_is_better else '≤'} {number(figure.target)} {figure.unit}"


def _row(figure: Figure, note: Optional[int]) -> tuple[str, ...]:
    met = {True: "✓", False: "✗", None: ""}[figure.met]
    ratio = figure.ratio
    return (
        figure.name + ("" if note is None else f" [{note}]"),
        _with_unit(figure.value, figure.unit),
        _target(figure),
        met,
        figure.reference or "",
        _with_unit(figure.reference_value, figure.unit),
        "" if ratio is None else f"{number(ratio)}×",
    )


def table(benchmark: str, figures: Sequence[Figure]) -> str:
    """A plain-text table, columns aligned (numbers to the right), notes numbered below it."""
    notes = list(dict.fromkeys(f.note for f in figures if f.note))
    rows = [_COLUMNS] + [_row(f, notes.index(f.note) + 1 if f.note else None) for f in figures]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    right = {1, 2, 5, 6}
    lines = [benchmark]
    for row in rows:
        cells = [cell.rjust(width) if i in right else cell.ljust(width)
                 for i, (cell, width) in enumerate(zip(row, widths))]
        lines.append("  " + "  ".join(cells).rstrip())
    lines += [f"  [{i}] {note}" for i, note in enumerate(notes, 1)]
    return "\n".join(lines)


def json_lines(figures: Sequence[Figure]) -> str:
    """One JSON object per figure (Figure.as_dict), one per line."""
    return "\n".join(json.dumps(f.as_dict(), ensure_ascii=False) for f in figures)


def machine() -> dict[str, str]:
    """Date, kernel release, CPU model and count: what a figure depends on."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            names = (line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
            model = next(names, model)
    except OSError:
        pass
    return {
        "date": datetime.date.today().isoformat(),
        "kernel": platform.release(),
        "cpu": model,
        "cpus": str(len(os.sched_getaffinity(0))),
        "python": platform.python_version(),
    }
