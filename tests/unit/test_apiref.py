"""The API reference is the code's: docs/apiref.py --check finds docs/api.md as it would write it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_api_md_is_generated_from_the_docstrings():
    result = subprocess.run([sys.executable, str(DOCS / "apiref.py"), "--check"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


def test_every_public_name_has_an_entry():
    import bpfscope

    text = (DOCS / "api.md").read_text()
    missing = [name for name in bpfscope.__all__ if not name.startswith("_") and f"`{name}" not in text
               and f"`class {name}" not in text]
    assert not missing
