"""What the guests' pytest runs say: outcomes read from each guest's JUnit XML, the kernel × test table
printed at the end, and the support table (kernel × feature × tool) written into docs/kernels.md."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from .guest import Outcome

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
LEGEND = f"{PASSED}/{FAILED}/{SKIPPED}"  # how a cell of either table counts tests
_VERBOSE = re.compile(r"^(tests/\S+?::.+?) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)(?: +\[ *\d+%\])?$")
_VERDICTS = {"PASSED": PASSED, "FAILED": FAILED, "ERROR": FAILED, "SKIPPED": SKIPPED, "XFAIL": SKIPPED, "XPASS": PASSED}


@dataclass
class KernelResult:
    label: str
    release: str
    outcome: Outcome
    tests: dict[str, tuple[str, str]] = field(default_factory=dict)  # test id -> (outcome, skip reason or message)
    doctor: dict[str, Any] = field(default_factory=dict)  # `bpfscope doctor --json` in the guest

    @property
    def finished(self) -> bool:
        return self.outcome.status is not None and (self.outcome.out / "junit.xml").exists()

    @property
    def failures(self) -> list[str]:
        return [t for t, (o, _) in self.tests.items() if o == FAILED]


def read(outcome: Outcome) -> KernelResult:
    kernel = outcome.kernel
    result = KernelResult(kernel.name, kernel.release, outcome)
    junit = outcome.out / "junit.xml"
    if junit.exists():
        for case in ElementTree.parse(junit).iter("testcase"):
            test = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
            problem = case.find("failure")
            if problem is None:
                problem = case.find("error")
            skipped = case.find("skipped")
            if problem is not None:
                result.tests[test] = (FAILED, (problem.get("message") or "").splitlines()[0][:160])
            elif skipped is not None:
                result.tests[test] = (SKIPPED, _skip_reason(skipped.get("message") or ""))
            else:
                result.tests[test] = (PASSED, "")
    elif (outcome.out / "output.log").exists():
        # A guest stopped before pytest wrote its JUnit XML: the outcomes pytest -v printed so far.
        for line in (outcome.out / "output.log").read_text(errors="replace").splitlines():
            match = _VERBOSE.match(line)
            if match:
                test, verdict = match.groups()
                result.tests[test] = (_VERDICTS[verdict], "")
    doctor = outcome.out / "doctor.json"
    if doctor.exists() and doctor.stat().st_size:
        result.doctor = json.loads(doctor.read_text())
    return result


def _skip_reason(message: str) -> str:
    return re.sub(r"^Skipped: ", "", message)


def _module(test: str) -> str:
    return test.split("::")[0]


def table(results: list[KernelResult]) -> str:
    """One row per test module, one column per kernel: its tests passed/failed/skipped, and a legend."""
    modules = sorted({_module(t) for r in results for t in r.tests})
    header = ["tests", *(r.label for r in results)]
    rows = [header, ["kernel", *(r.release for r in results)]]
    for module in modules:
        row = [module.removeprefix("tests/")]
        for r in results:
            counts = _count(r, module)
            row.append(_counts_cell(counts) + (" FAIL" if counts[FAILED] else "") if counts else "-")
        rows.append(row)
    rows.append(["all", *(_counts_cell(_count(r)) for r in results)])
    rows.append(["boot + tests", *(_summary(r) for r in results)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(2, "  ".join("-" * w for w in widths))
    lines.append(f"(cells: {LEGEND} tests; -: not in that guest's run)")
    return "\n".join(lines)


def _count(r: KernelResult, module: str | None = None) -> Counter[str]:
    """Outcomes of one test module's tests, or of all."""
    return Counter(o for t, (o, _) in r.tests.items() if module is None or _module(t) == module)


def _counts_cell(counts: Counter[str]) -> str:
    """Every outcome, so a kernel that skips a test never reads as one that passed it all."""
    return f"{counts[PASSED]}/{counts[FAILED]}/{counts[SKIPPED]}"


def _summary(r: KernelResult) -> str:
    if r.outcome.timed_out:
        return f"UNFINISHED {r.outcome.seconds:.0f} s"  # timed out, or stopped
    if not r.finished:
        return f"NO RESULT (see {r.outcome.out})"
    return f"{r.outcome.seconds:.0f} s"


def details(results: list[KernelResult]) -> str:
    """Each failure by name, and the skips grouped by reason, per kernel."""
    lines: list[str] = []
    for r in results:
        for test in r.failures:
            lines.append(f"FAILED on {r.label}: {test}: {r.tests[test][1]}")
        reasons = Counter(reason for o, reason in r.tests.values() if o == SKIPPED)
        for reason, count in sorted(reasons.items()):
            lines.append(f"skipped on {r.label}: {count} × {reason}")
    return "\n".join(lines)


def _tool_cell(r: KernelResult, tool: str) -> str:
    counts = _count(r, f"tests/tools/test_{tool}.py")
    verdict = "yes" if counts[PASSED] and not counts[FAILED] else "FAILS" if counts[FAILED] else "untested"
    detail = r.doctor.get("tools", {}).get(tool, {}).get("detail", "")
    hook = next((h for h in ("tcx", "clsact") if h in detail), "")
    cut = "" if r.finished else ", run cut off"
    return f"{verdict} ({_counts_cell(counts)}{', ' + hook if hook else ''}{cut})"


def support_markdown(results: list[KernelResult]) -> str:
    kernels = [r for r in results if r.doctor]
    head = "| | " + " | ".join(f"{r.label} ({r.release})" for r in kernels) + " |"
    rule = "|---" * (len(kernels) + 1) + "|"
    features = sorted({f for r in kernels for f in r.doctor.get("features", {})})
    tools = sorted({t for r in kernels for t in r.doctor.get("tools", {})})
    runs = [f"{len(r.tests)} tests ({_counts_cell(_count(r))}), {r.outcome.seconds / 60:.0f} min"
            + ("" if r.finished else ", unfinished") for r in kernels]
    out = ["### Kernel features (`bpfscope doctor` in each guest)", "", head, rule,
           "| the run | " + " | ".join(runs) + " |"]
    for feature in features:
        cells = []
        for r in kernels:
            answer = r.doctor["features"].get(feature)  # None: that run's bpfscope did not probe it
            cells.append("-" if answer is None else "yes" if answer.get("ok") else "no")
        out.append(f"| {feature} | " + " | ".join(cells) + " |")
    out += ["", f"### Tools (their kernel tests in each guest: {LEGEND})", "", head, rule]
    for tool in tools:
        out.append(f"| {tool} | " + " | ".join(_tool_cell(r, tool) for r in kernels) + " |")
    return "\n".join(out)


def write_docs(results: list[KernelResult], path: Path) -> None:
    """Replaces the block between the markers in `path` with the support table of this run."""
    begin, end = "<!-- support table: begin -->", "<!-- support table: end -->"
    text = path.read_text()
    before, _, rest = text.partition(begin)
    _, _, after = rest.partition(end)
    path.write_text(f"{before}{begin}\n{support_markdown(results)}\n{end}{after}")

