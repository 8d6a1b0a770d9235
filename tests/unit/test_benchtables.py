"""The figures in the docs are those of the saved runs: docs/benchtables.py finds no stale table,
and a saved run reads back as it was written."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from bpfscope.benchmarks import Figure, report

DOCS = Path(__file__).resolve().parents[2] / "docs"

FIGURES = [
    Figure("ringbuf", "batch reader drain()", 135.0, "M events/s", True, target=20.0,
           reference="libbpf (C)", reference_value=300.0, note="median of 5 rounds",
           spread=(120.0, 140.0), reference_spread=(280.0, 320.0)),
    Figure("ringbuf", "batch write", 40.0, "ms", False, note="single run"),
]
HEADER = {"date": "2026-12-01", "commit": "0123456789abcdef", "uncommitted changes": "no", "kernel": "6.18",
          "command": "bpfscope bench ringbuf --json --save docs/bench"}


def _benchtables() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_benchtables", DOCS / "benchtables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_bench_table_is_its_files() -> None:
    benchtables = _benchtables()
    stale = {doc.name: benchtables.stale(doc) for doc in DOCS.glob("*.md")}
    assert not any(stale.values()), f"run python docs/benchtables.py: {stale}"


def test_the_benchmarks_page_has_a_table_for_every_saved_run() -> None:
    text = (DOCS / "benchmarks.md").read_text()
    for path in sorted((DOCS / "bench").glob("*.jsonl")):
        assert f"<!-- bench docs/bench/{path.name} -->" in text


def test_a_saved_run_reads_back_as_written(tmp_path: Path) -> None:
    path = tmp_path / "ringbuf.jsonl"
    report.save(path, HEADER, FIGURES)
    assert report.load(path) == (HEADER, FIGURES)
    assert not list(tmp_path.glob("*.partial"))


def test_a_file_without_its_machine_line_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ringbuf.jsonl"
    path.write_text(report.json_lines(FIGURES) + "\n")
    with pytest.raises(ValueError, match="machine"):
        report.load(path)


def test_ranges_stand_beside_values_and_references() -> None:
    text = report.markdown(FIGURES)
    row = text.splitlines()[2]
    assert "| 135 M events/s (120–140) | ≥ 20.0 M events/s | ✓ |" in row
    assert "| 300 M events/s (280–320) | 0.45× |" in row
    assert "| 40.0 ms |" in text.splitlines()[3]  # taken once: no range
    assert text.splitlines()[-2:] == ["1. median of 5 rounds", "2. single run"]
    assert "135 M events/s (120–140)" in report.table("ringbuf", FIGURES)


def test_a_changed_run_makes_its_table_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    benchtables = _benchtables()
    monkeypatch.setattr(benchtables, "ROOT", tmp_path)
    (tmp_path / "bench").mkdir()
    report.save(tmp_path / "bench" / "ringbuf.jsonl", HEADER, FIGURES)
    doc = tmp_path / "doc.md"
    doc.write_text("# x\n<!-- bench bench/ringbuf.jsonl -->\n<!-- /bench -->\n"
                   "<!-- bench-targets bench -->\n<!-- /bench -->\n")
    assert benchtables.stale(doc) == ["bench/ringbuf.jsonl", "bench"]
    assert benchtables.main([str(doc)]) == 0
    text = doc.read_text()
    assert "at commit 0123456789ab: `bpfscope bench ringbuf --json --save docs/bench`" in text
    assert ("| ringbuf | batch reader drain() | 135 M events/s (120–140) | ≥ 20.0 M events/s | ✓ | libbpf (C) | "
            "300 M events/s (280–320) | 2026-12-01, 0123456789 |") in text
    assert benchtables.stale(doc) == []

    report.save(tmp_path / "bench" / "ringbuf.jsonl", HEADER, FIGURES[1:])
    assert benchtables.stale(doc) == ["bench/ringbuf.jsonl", "bench"]
    assert benchtables.main(["--check", str(doc)]) == 1
    assert "the table for bench/ringbuf.jsonl is stale" in capsys.readouterr().err

    (tmp_path / "bench" / "ringbuf.jsonl").write_text("not json\n")
    assert benchtables.stale(doc)[0].startswith("bench/ringbuf.jsonl (")

    # A run not saved yet: the page says so, and that is not stale until the file appears.
    (tmp_path / "bench" / "ringbuf.jsonl").unlink()
    assert benchtables.main([str(doc)]) == 0
    assert "No saved run: `bpfscope bench ringbuf --json --save bench` writes bench/ringbuf.jsonl" in doc.read_text()
    assert benchtables.stale(doc) == []
