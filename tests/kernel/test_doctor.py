"""`bpfscope doctor` as a user runs it: its answers agree with the feature probes (which
test_features.py pins to what each kernel is known to have), and its lockdown and LSM rows with what a
securityfs of the test's own shows, on the CI kernel and in the VM matrix."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bpfscope import _libbpf
from bpfscope._privileges import parse_lockdown, parse_lsms
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
    # the libbpf in use, by version and by the file the loader mapped
    assert report["libbpf"] == "{}.{}".format(*_libbpf.version())
    assert os.path.realpath(report["libbpf_path"]) == os.path.realpath(_libbpf.path())
    assert "/libbpf.so" in report["libbpf_path"]
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


def _read_securityfs() -> tuple[str | None, list[str] | None]:
    """Lockdown mode and LSM list read here, from a securityfs of the test's own (the probe the doctor
    rows are checked against); skips only where securityfs cannot be mounted."""
    with tempfile.TemporaryDirectory() as directory:
        mounted = subprocess.run(["mount", "-t", "securityfs", "securityfs", directory],
                                 capture_output=True, text=True, check=False)
        if mounted.returncode != 0:
            pytest.skip(f"securityfs cannot be mounted here: {mounted.stderr.strip()}")
        try:
            lockdown = Path(directory, "lockdown")
            lsm = Path(directory, "lsm")
            return (parse_lockdown(lockdown.read_text()) if lockdown.exists() else None,
                    list(parse_lsms(lsm.read_text())) if lsm.exists() else None)
        finally:
            subprocess.run(["umount", directory], check=True)


def test_reports_lockdown_and_lsms() -> None:
    """On the CI kernel: integrity, and the BPF LSM among lockdown, capability, landlock, bpf."""
    mode, lsms = _read_securityfs()
    report = json.loads(_doctor("--json").stdout)
    lockdown, lsm = report["system"]["lockdown"], report["system"]["lsm"]
    assert report["system"]["securityfs"]["ok"] is True
    assert lockdown.get("value") == mode and lsm.get("value") == lsms
    if mode is not None:
        assert lockdown["detail"].startswith(f"{mode}: ")
        assert lockdown["ok"] is (mode != "confidentiality")
    if lsms is not None:
        assert lsm["ok"] is ("bpf" in lsms)
        assert ("the BPF LSM is active" in lsm["detail"]) is ("bpf" in lsms)
    human = _doctor().stdout
    assert "no lockdown LSM" not in human or mode is None
    assert re.search(rf"  \S  lockdown\s+{re.escape(mode or 'no lockdown LSM')}", human), human


def test_mounts_securityfs_where_it_is_missing() -> None:
    """As on a fresh machine: in a mount namespace of its own without securityfs, doctor mounts it and
    still reads lockdown and the LSMs; the test's own namespace is left as it was."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is not installed, so no mount namespace of its own")
    mode, lsms = _read_securityfs()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    script = ("while grep -q ' /sys/kernel/security ' /proc/mounts; do umount /sys/kernel/security || exit 3; done; "
              f"exec {sys.executable} -m bpfscope.cli.main doctor --json")
    result = subprocess.run([unshare, "--mount", "--propagation", "private", "sh", "-c", script],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    system = json.loads(result.stdout)["system"]
    assert system["securityfs"] == {"ok": True, "detail": "mounted on /sys/kernel/security (doctor mounted it)",
                                    "fix": None}
    assert system["lockdown"].get("value") == mode and system["lsm"].get("value") == lsms
