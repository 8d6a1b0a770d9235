"""`bpfscope doctor` as a user runs it: its answers agree with the feature probes (which
test_features.py pins to what each kernel is known to have), on the CI kernel and in the VM matrix."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from bpfscope.features import Feature, probe

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
    for feature in Feature:
        row, missing = report["features"][feature.key], probe(feature)
        assert row["ok"] is (missing is None), (feature, row)
        assert bool(row["fix"]) is (missing is not None)
    # the tc tools name the hook they will use: tcx where the kernel has it, clsact + cls_bpf otherwise
    hook = "tcx links" if probe(Feature.TCX) is None else "clsact"
    assert hook in report["tools"]["flows"]["detail"]
    tcmon = report["tools"]["tcmon"]
    assert tcmon["ok"] and hook in tcmon["detail"]  # with or without BPF atomics (spin locks before 5.12)


def test_human_report() -> None:
    result = _doctor()
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    packets = next(line for line in lines if line.split()[1:2] == ["packets"])
    assert packets.lstrip().startswith("✓")
    for feature in Feature:
        row = next(line for line in lines if re.match(rf"  \S  {re.escape(feature.value)}(\s|$)", line))
        assert row.lstrip().startswith("✓" if probe(feature) is None else "✗"), row
    # aligned: the detail of every row starts in the same column
    columns = {m.end() for m in map(_ROW.match, lines) if m and m.group(1) in "✓✗"}
    assert len(columns) == 1
