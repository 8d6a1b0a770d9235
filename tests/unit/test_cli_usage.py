"""The bpfscope command's usage paths, which need no root: one line, an exit code, no traceback."""

from __future__ import annotations

import subprocess
import sys

from bpfscope import __version__

BPFSCOPE = [sys.executable, "-m", "bpfscope.cli.main"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BPFSCOPE, *args], capture_output=True, text=True, timeout=60)


def test_version():
    result = run("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"bpfscope {__version__}"


def test_help_lists_subcommands():
    out = run("--help").stdout
    for command in ("packets", "doctor", "build", "bench"):
        assert command in out


def test_bad_option_values_are_one_line_exit_2():
    for args in (["packets", "--interval", "-1"], ["packets", "--mode", "turbo"], ["packets", "--duration", "x"],
                 ["nosuchcommand"]):
        result = run(*args)
        assert result.returncode == 2, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
