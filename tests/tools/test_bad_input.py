"""Every bad input of the foundation, through the real command: one line on stderr, a non-zero exit,
no traceback, and nothing left attached or loaded."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from loaded import left_behind, loaded, unheld

BPFSCOPE = [sys.executable, "-m", "bpfscope.cli.main"]
REJECTED = Path(__file__).resolve().parents[1] / "bpf" / "verifier_reject.bpf.c"


def bpfscope(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, *BPFSCOPE, *args], capture_output=True, text=True, timeout=60, check=False)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0]
    return lines[0]


def test_unknown_interface_lists_the_existing_ones():
    before = unheld(["count_packets"])
    line = assert_one_line_error(bpfscope("packets", "--iface", "nosuch0", "--duration", "1"),
                                 "no interface 'nosuch0'", "lo")
    assert line.startswith("bpfscope packets:")
    assert not left_behind(["count_packets"], before)


def test_no_privileges_names_the_capability():
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed, so capabilities cannot be dropped")
    # Root without any capability: what a user without CAP_BPF sees.
    drop_all = (setpriv, "--bounding-set", "-all", "--inh-caps", "-all", "--")
    assert_one_line_error(bpfscope("packets", "--iface", "lo", "--duration", "1", prefix=drop_all),
                          "needs root or CAP_BPF")


def test_missing_source_file():
    assert_one_line_error(bpfscope("build", "/nonexistent/prog.bpf.c"), "/nonexistent/prog.bpf.c")


def test_verifier_rejection_shows_cause_and_source_line(tmp_path):
    source = tmp_path / "reject.bpf.c"
    source.write_text(REJECTED.read_text())
    result = bpfscope("build", str(source), "--verify")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "verifier rejected program 'unchecked_lookup'" in line
    assert "invalid mem access" in line and "*count += 1" in line
    assert "unchecked_lookup" not in loaded().values()


def test_verbose_verifier_rejection_adds_the_log_tail(tmp_path):
    source = tmp_path / "reject.bpf.c"
    source.write_text(REJECTED.read_text())
    result = bpfscope("--verbose", "build", str(source), "--verify")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "processed" in result.stderr  # the verifier's own last lines


def test_missing_kernel_feature_native_xdp_on_lo():
    before = unheld(["count_packets"])
    assert_one_line_error(bpfscope("packets", "--iface", "lo", "--mode", "native", "--duration", "1"),
                          "no native XDP")
    assert not left_behind(["count_packets"], before)


@pytest.mark.parametrize("args", [
    ["packets", "--interval", "0"],
    ["packets", "--duration", "soon"],
    ["packets", "--mode", "fast"],
])
def test_bad_option_values(args):
    result = bpfscope(*args)
    assert result.returncode == 2
    assert_one_line_error(result, "bpfscope packets:")
