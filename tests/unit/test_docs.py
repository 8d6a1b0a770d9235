"""The code in the docs is the code in the repository: docs/include.py finds no stale block."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _include():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("docs_include", DOCS / "include.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_included_block_is_the_files_text():
    include = _include()
    stale = {doc.name: include.stale(doc) for doc in DOCS.glob("*.md")}
    assert not any(stale.values()), f"run python docs/include.py: {stale}"


def test_a_changed_file_makes_its_block_stale(tmp_path, monkeypatch):
    include = _include()
    (tmp_path / "prog.c").write_text("int x;\n")
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- include prog.c -->\n```c\nint x;\n```\n")
    monkeypatch.setattr(include, "ROOT", tmp_path)
    assert include.stale(doc) == []
    (tmp_path / "prog.c").write_text("int y;\n")
    assert include.stale(doc) == ["prog.c"]
