"""Figures as text: one table per benchmark (value, target, met, reference, ratio side by side), one
JSON line per figure, or a Markdown table for the docs. A figure given over rounds shows its range
beside it: "135 M events/s (120–140)". Also the machine a run was made on, and the saved form of a
run (`bpfscope bench NAME --save DIR`): DIR/NAME.jsonl, a {"machine": {...}} line, then the figures;
docs/benchtables.py makes the tables in docs/benchmarks.md from those files."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import subprocess
from dataclasses import fields
from pathlib import Path
from typing import Any, Optional, Sequence

from . import Figure, Rounds

__all__ = ["table", "markdown", "cells", "json_lines", "machine", "number", "save", "load"]

_COLUMNS = ("figure", "value", "target", "met", "reference", "reference value", "ratio")
_RIGHT = {1, 2, 5, 6}  # columns of numbers
_CHECKOUT = Path(__file__).resolve().parents[3]  # src/bpfscope/benchmarks/report.py → the checkout


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


def _with_unit(value: Optional[float], unit: str, spread: Optional[Rounds] = None) -> str:
    if value is None:
        return ""
    text = f"{number(value)} {unit}"
    if spread is None or spread[0] == spread[1]:  # one round: no range to show
        return text
    return f"{text} ({number(spread[0])}–{number(spread[1])})"


def _target(figure: Figure) -> str:
    if figure.target is None:
        return ""
    return f"{'≥' if figure.higher_is_better else '≤'} {number(figure.target)} {figure.unit}"


def cells(figure: Figure, note: Optional[int] = None) -> tuple[str, ...]:
    """The figure's cells, in the order of the table's columns; `note`: its note's number."""
    met = {True: "✓", False: "✗", None: ""}[figure.met]
    ratio = figure.ratio
    return (
        figure.name + ("" if note is None else f" [{note}]"),
        _with_unit(figure.value, figure.unit, figure.spread),
        _target(figure),
        met,
        figure.reference or "",
        _with_unit(figure.reference_value, figure.unit, figure.reference_spread),
        "" if ratio is None else f"{number(ratio)}×",
    )


def _rows(figures: Sequence[Figure]) -> tuple[list[tuple[str, ...]], list[str]]:
    """One row per figure, and the notes its rows point at ([1], [2]…), each note once."""
    notes = list(dict.fromkeys(f.note for f in figures if f.note))
    return [cells(f, notes.index(f.note) + 1 if f.note else None) for f in figures], notes


def table(benchmark: str, figures: Sequence[Figure]) -> str:
    """A plain-text table, columns aligned (numbers to the right), notes numbered below it."""
    body, notes = _rows(figures)
    rows = [_COLUMNS, *body]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = [benchmark]
    for row in rows:
        cells = [cell.rjust(width) if i in _RIGHT else cell.ljust(width)
                 for i, (cell, width) in enumerate(zip(row, widths))]
        lines.append("  " + "  ".join(cells).rstrip())
    lines += [f"  [{i}] {note}" for i, note in enumerate(notes, 1)]
    return "\n".join(lines)


def markdown(figures: Sequence[Figure]) -> str:
    """The same table in Markdown, notes as a numbered list below it."""
    body, notes = _rows(figures)

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    align = ["---:" if i in _RIGHT else (":-:" if i == 3 else "---") for i in range(len(_COLUMNS))]
    lines = [line(_COLUMNS), "| " + " | ".join(align) + " |", *(line(row) for row in body)]
    if notes:
        lines.append("")
        lines += [f"{i}. {note}" for i, note in enumerate(notes, 1)]
    return "\n".join(lines)


def json_lines(figures: Sequence[Figure]) -> str:
    """One JSON object per figure (Figure.as_dict), one per line."""
    return "\n".join(json.dumps(f.as_dict(), ensure_ascii=False) for f in figures)


def _first_line(command: Sequence[str]) -> Optional[str]:
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0].strip() if done.returncode == 0 and lines else None


def _commit() -> tuple[str, str]:
    """The checkout's HEAD and whether src/ differs from it ("yes", "no"), or "unknown" outside one."""
    if not (_CHECKOUT / ".git").exists():
        return "unknown", "unknown"
    head = _first_line(["git", "-C", str(_CHECKOUT), "rev-parse", "HEAD"]) or "unknown"
    try:
        changed = subprocess.run(["git", "-C", str(_CHECKOUT), "status", "--porcelain", "--", "src"],
                                 capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return head, "unknown"
    return head, "yes" if changed else "no"


def machine() -> dict[str, str]:
    """What a figure depends on: kernel, CPU, the software measured and its peers, the date, the
    commit (and whether src/ had uncommitted changes), and how busy the machine was at the start."""
    from .. import _libbpf

    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            names = (line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
            model = next(names, model)
    except OSError:
        pass
    try:
        import numpy

        numpy_version = numpy.__version__
    except ImportError:
        numpy_version = "none"
    commit, dirty = _commit()
    return {
        "date": datetime.date.today().isoformat(),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "cpu": model,
        "cpus": str(len(os.sched_getaffinity(0))),
        "python": platform.python_version(),
        "numpy": numpy_version,
        "libbpf": "{}.{}".format(*_libbpf.version()),
        "bpftool": (_first_line(["bpftool", "version"]) or "none").removeprefix("bpftool "),
        "bpftrace": (_first_line(["bpftrace", "--version"]) or "none").removeprefix("bpftrace "),
        "load average": f"{os.getloadavg()[0]:.2f}",
        "commit": commit,
        "uncommitted changes": dirty,
    }


def save(path: str | os.PathLike[str], header: dict[str, str], figures: Sequence[Figure]) -> None:
    """Writes one benchmark's run: a {"machine": header} line, then one line per figure."""
    text = json.dumps({"machine": header}, ensure_ascii=False) + "\n" + json_lines(figures) + "\n"
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(text)
    partial.replace(target)  # a run that dies half-way leaves the old file whole


_FIELDS = {f.name for f in fields(Figure)}


def _figure(record: dict[str, Any]) -> Figure:
    known = {k: v for k, v in record.items() if k in _FIELDS}  # ratio and met are computed
    for key in ("spread", "reference_spread"):
        if known.get(key) is not None:
            low, high = known[key]
            known[key] = (float(low), float(high))
    return Figure(**known)


def load(path: str | os.PathLike[str]) -> tuple[dict[str, str], list[Figure]]:
    """A run saved by `save`: its machine header and its figures."""
    lines = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if not lines or "machine" not in lines[0]:
        raise ValueError(f"{path}: the first line is not a {{\"machine\": ...}} header")
    return dict(lines[0]["machine"]), [_figure(record) for record in lines[1:]]
