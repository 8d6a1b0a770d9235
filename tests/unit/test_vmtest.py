"""The kernel matrix's own pieces that need no guest: the initramfs archive (unpacked by busybox, as
the kernel would), kernels.toml, the guests' JUnit XML read into outcomes, the table and the support
table written into a markdown file. The guests themselves run in `make test-kernels`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from bpfscope.features import Feature
from vmtest import archive, guest, report
from vmtest.__main__ import main


def test_newc_archive_unpacks_with_cpio(tmp_path: Path) -> None:
    busybox = shutil.which("busybox")
    assert busybox, "busybox is missing: `make deps` installs busybox-static"
    odd = bytes(range(256)) * 3 + b"x"  # a length that needs padding
    data = guest._newc([("bin", 0o040755, b""), ("bin/tool", 0o100755, odd), ("init", 0o100755, b"#!/bin/sh\n")])
    (tmp_path / "archive.cpio").write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    with (tmp_path / "archive.cpio").open("rb") as f:
        subprocess.run([busybox, "cpio", "-i", "-d"], stdin=f, cwd=out, check=True, capture_output=True)
    assert (out / "bin" / "tool").read_bytes() == odd
    assert (out / "init").read_bytes() == b"#!/bin/sh\n"
    assert (out / "bin" / "tool").stat().st_mode & 0o777 == 0o755


def test_kernels_file_names_each_line_with_checksums() -> None:
    kernels = archive.load_kernels()
    x86 = {k.name for k in kernels if k.arch == "x86_64"}
    assert {"5.10", "6.1", "6.12"} <= x86 and any(name.startswith("7.") for name in x86)
    for kernel in kernels:
        assert kernel.packages and all(len(p.sha256) == 64 for p in kernel.packages)
        assert set(kernel.absent) <= {f.key for f in Feature}, kernel.name
    assert {"tcx", "bpf_loop", "atomics", "task_pt_regs", "xdp_live_frames", "task_storage", "task_from_pid"} == set(
        next(k for k in kernels if k.name == "5.10").absent)


JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="9">
<testcase classname="tests.tools.test_flows" name="test_counts" time="1.0"/>
<testcase classname="tests.tools.test_flows" name="test_kill_9" time="0.1">
  <skipped type="pytest.skip" message="this kernel does not support tcx links: EINVAL">...</skipped></testcase>
<testcase classname="tests.tools.test_tcmon" name="test_scan" time="2.0">
  <failure message="AssertionError: assert 1 == 2&#10;more">trace</failure></testcase>
<testcase classname="tests.tools.test_tcmon" name="test_rules" time="0.2"/>
<testcase classname="tests.tools.test_guard" name="test_drops[atomics]" time="1.0"/>
<testcase classname="tests.tools.test_guard" name="test_drops[spin_lock]" time="1.0"/>
<testcase classname="tests.tools.test_guard" name="test_limit" time="3.0">
  <error message="OSError: [Errno 16] Device or resource busy">trace</error></testcase>
<testcase classname="tests.tools.test_guard" name="test_tcx" time="0.0">
  <skipped type="pytest.skip" message="Skipped: this kernel does not support tcx links: EINVAL">...</skipped></testcase>
<testcase classname="tests.tools.test_guard" name="test_two_cpus" time="0.0">
  <skipped type="pytest.skip" message="needs two CPUs">...</skipped></testcase>
</testsuite></testsuites>"""


def outcome(tmp_path: Path, name: str, status: int | None = 1) -> guest.Outcome:
    kernel = archive.Kernel(name, "x86_64", "suite", f"{name}.0-1-amd64", ("tcx",), ())
    out = tmp_path / name
    out.mkdir()
    (out / "junit.xml").write_text(JUNIT)
    (out / "doctor.json").write_text(
        '{"features": {"tcx": {"ok": false}, "ringbuf": {"ok": true}},'
        ' "tools": {"flows": {"ok": true, "detail": "clsact + cls_bpf, CAP_BPF"}, "tcmon": {"ok": true, "detail": ""},'
        ' "guard": {"ok": true, "detail": ""}}}'
    )
    return guest.Outcome(kernel, 12.0, status, out)


def test_junit_is_read_into_outcomes(tmp_path: Path) -> None:
    result = report.read(outcome(tmp_path, "5.10"))
    assert result.tests["tests/tools/test_flows.py::test_counts"] == (report.PASSED, "")
    assert result.tests["tests/tools/test_flows.py::test_kill_9"] == (
        report.SKIPPED, "this kernel does not support tcx links: EINVAL")
    assert result.tests["tests/tools/test_guard.py::test_tcx"] == (
        report.SKIPPED, "this kernel does not support tcx links: EINVAL")
    assert result.failures == ["tests/tools/test_tcmon.py::test_scan", "tests/tools/test_guard.py::test_limit"]
    assert result.finished
    details = report.details([result]).splitlines()
    assert "FAILED on 5.10: tests/tools/test_tcmon.py::test_scan: AssertionError: assert 1 == 2" in details
    assert "FAILED on 5.10: tests/tools/test_guard.py::test_limit: OSError: [Errno 16] Device or resource busy" in (
        details)
    assert "skipped on 5.10: 2 × this kernel does not support tcx links: EINVAL" in details


def test_each_cell_of_the_table_counts_passed_failed_and_skipped(tmp_path: Path) -> None:
    later = outcome(tmp_path, "6.1")
    (later.out / "junit.xml").write_text(re.sub(r"<skipped .*?</skipped>", "", JUNIT, flags=re.S))  # none skipped
    lines = report.table([report.read(outcome(tmp_path, "5.10")), report.read(later)]).splitlines()
    cells = {line.split()[0]: line.split()[1:] for line in lines}
    assert cells["tests"] == ["5.10", "6.1"]
    assert cells["tools/test_flows.py"] == ["1/0/1", "2/0/0"]  # a skip is never hidden in a full count
    assert cells["tools/test_tcmon.py"] == ["1/1/0", "FAIL", "1/1/0", "FAIL"]
    assert cells["tools/test_guard.py"] == ["2/1/2", "FAIL", "4/1/0", "FAIL"]
    assert cells["all"] == ["4/2/3", "7/2/0"]
    assert lines[-1] == "(cells: passed/failed/skipped tests; -: not in that guest's run)"


def test_a_module_a_guest_did_not_run_is_a_dash(tmp_path: Path) -> None:
    arm = outcome(tmp_path, "arm64-6.1")
    (arm.out / "junit.xml").write_text(JUNIT.replace("tests.tools.test_guard", "tests.tools.test_flows"))
    lines = report.table([report.read(outcome(tmp_path, "5.10")), report.read(arm)]).splitlines()
    assert next(line for line in lines if line.startswith("tools/test_guard.py")).split()[1:] == ["2/1/2", "FAIL", "-"]


def test_a_guest_that_wrote_nothing_has_no_result(tmp_path: Path) -> None:
    result = report.read(outcome(tmp_path, "6.1", status=None))
    assert not result.finished
    assert "NO RESULT" in report.table([result])


def test_support_table_replaces_only_its_block(tmp_path: Path) -> None:
    docs = tmp_path / "kernels.md"
    docs.write_text("intro\n<!-- support table: begin -->\nold\n<!-- support table: end -->\noutro\n")
    report.write_docs([report.read(outcome(tmp_path, "5.10"))], docs)
    text = docs.read_text()
    assert text.startswith("intro\n<!-- support table: begin -->\n")
    assert text.endswith("<!-- support table: end -->\noutro\n")
    assert "old" not in text
    assert "| tcx | no |" in text and "| ringbuf | yes |" in text
    assert "### Tools (their kernel tests in each guest: passed/failed/skipped)" in text
    assert "| the run | 9 tests (4/2/3), 0 min |" in text
    assert "| flows | yes (1/0/1, clsact) |" in text
    assert "| tcmon | FAILS (1/1/0) |" in text
    assert "| guard | FAILS (2/1/2) |" in text


def test_an_earlier_run_is_read_back_from_its_folder(tmp_path: Path) -> None:
    done = outcome(tmp_path, "6.12").out
    (done / "run.sh").write_text("true\n")
    (done / "status").write_text("1\n")
    os.utime(done / "run.sh", (1000, 1000))
    for name in ("status", "junit.xml", "doctor.json"):
        os.utime(done / name, (1090, 1090))
    again = guest.finished(outcome(tmp_path, "6.1").kernel, done)
    assert (again.status, again.seconds, again.timed_out) == (1, 90, False)
    (done / "status").unlink()
    assert guest.finished(again.kernel, done).timed_out  # no status: it never finished


def test_report_only_without_results_leaves_the_docs_alone(tmp_path: Path) -> None:
    docs = tmp_path / "kernels.md"
    docs.write_text("<!-- support table: begin -->\nthe last run\n<!-- support table: end -->\n")
    assert main(["--report-only", "--out", str(tmp_path / "nothing"), "--docs", str(docs)]) == 2
    assert "the last run" in docs.read_text()
