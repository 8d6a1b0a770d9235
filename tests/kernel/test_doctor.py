"""`bpfscope doctor` as a user runs it, on the CI kernel."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# "  ✓  kernel BTF     detail": mark, name, then the detail column
_ROW = re.compile(r"  (\S+)\s+(\S+(?: \S+)*?)\s{2,}")


def _doctor(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(
        [sys.executable, "-m", "bpfscope.cli.main", "doctor", *args],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_json_report() -> None:
    result = _doctor("--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["system"]["btf"]["ok"] is True
    assert report["system"]["bpf_syscall"]["ok"] is True
    assert report["capabilities"]["CAP_BPF"] is True
    assert report["tools"]["packets"] == {
        "ok": True,
        "detail": report["tools"]["packets"]["detail"],
        "fix": None,
    }
    kprobes = report["features"]["kprobes"]
    assert kprobes["ok"] is False
    assert "kprobe" in kprobes["detail"] and kprobes["fix"]
    assert report["features"]["fentry"]["ok"] is False
    assert all(row["ok"] for key, row in report["features"].items() if key not in ("kprobes", "fentry"))


def test_human_report() -> None:
    result = _doctor()
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    packets = next(line for line in lines if line.split()[1:2] == ["packets"])
    assert packets.lstrip().startswith("✓")
    kprobes = next(line for line in lines if line.split()[1:2] == ["kprobes"])
    assert kprobes.lstrip().startswith("✗")
    # aligned: the detail of every row starts in the same column
    columns = {m.end() for m in map(_ROW.match, lines) if m and m.group(1) in "✓✗"}
    assert len(columns) == 1
