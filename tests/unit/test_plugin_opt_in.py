"""The pytest plugin is opted into (a conftest's pytest_plugins), never loaded by installing bpfscope,
and importing it loads no libbpf, so a project that only imports it for its fixtures' types needs none."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata


def test_installing_bpfscope_registers_no_pytest_plugin() -> None:
    entry_points = metadata.entry_points(group="pytest11")
    assert not [e for e in entry_points if e.value.startswith("bpfscope")]


def test_importing_the_plugin_loads_no_libbpf() -> None:
    code = "import sys, bpfscope.testing.plugin; print(sorted(m for m in sys.modules if m.startswith('bpfscope.')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert "bpfscope._libbpf" not in done.stdout, done.stdout
