"""Keeps the figures in the docs the figures of saved runs: between `<!-- bench PATH -->` and
`<!-- /bench -->` stands the table of the run saved in PATH (`bpfscope bench NAME --save docs/bench`
writes docs/bench/NAME.jsonl: the machine, then the figures), with the machine it ran on above it;
between `<!-- bench-targets DIR -->` and `<!-- /bench -->`, every figure with a target in DIR's runs.
A block whose file does not exist says so, and how to make it.
`python docs/benchtables.py` rewrites the blocks; `--check` exits 1 naming each block that differs
from its file or whose file cannot be read (a test runs it, so no table can drift from its file)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from bpfscope.benchmarks import report  # noqa: E402  (after the path above)

_BLOCK = re.compile(r"^<!-- (bench|bench-targets) (\S+) -->\n(.*?)^<!-- /bench -->$", re.M | re.S)


def machine_lines(header: dict[str, str]) -> list[str]:
    """What a run was made on, in two or three lines of Markdown."""
    commit = header.get("commit", "unknown")[:12]
    if header.get("uncommitted changes") == "yes":
        commit += " with uncommitted changes in src/"
    took = f", {header['seconds']} s" if "seconds" in header else ""
    lines = [
        f"Run of {header.get('date', '?')} at commit {commit}: `{header.get('command', '?')}`{took}.",
        f"Linux {header.get('kernel', '?')} ({header.get('arch', '?')}), {header.get('cpu', '?')}, "
        f"{header.get('cpus', '?')} CPUs, load average {header.get('load average', '?')} at the start; "
        f"Python {header.get('python', '?')}, numpy {header.get('numpy', '?')}, libbpf {header.get('libbpf', '?')}, "
        f"bpftool {header.get('bpftool', '?')}, bpftrace {header.get('bpftrace', '?')}.",
    ]
    if header.get("note"):
        lines.append(f"Note on this run: {header['note']}.")
    return lines


def _run_table(path: str) -> str:
    if not (ROOT / path).exists():  # said in the page, so a benchmark never run shows as such
        return (f"No saved run: `bpfscope bench {Path(path).stem} --json --save {Path(path).parent}` writes "
                f"{path}, then `python docs/benchtables.py`.")
    header, figures = report.load(ROOT / path)
    return "\n".join([*machine_lines(header), "", report.markdown(figures)])


def _targets_table(folder: str) -> str:
    """Every figure with a target, file by file (in name order), with its run's date and commit."""
    rows = ["| benchmark | figure | value | target | met | reference | reference value | run |",
            "| --- | --- | ---: | ---: | :-: | --- | ---: | --- |"]
    for path in sorted((ROOT / folder).glob("*.jsonl")):
        header, figures = report.load(path)
        run = f"{header.get('date', '?')}, {header.get('commit', 'unknown')[:10]}"
        for figure in figures:
            if figure.target is not None:
                _, value, target, met, reference, reference_value, _ = report.cells(figure)
                rows.append(f"| {figure.benchmark} | {figure.name} | {value} | {target} | {met} | {reference} | "
                            f"{reference_value} | {run} |")
    return "\n".join(rows)


def _generated(kind: str, path: str) -> str:
    return _run_table(path) if kind == "bench" else _targets_table(path)


def synced(text: str) -> str:
    """`text` with every bench block replaced by what its file holds now."""

    def block(match: re.Match[str]) -> str:
        kind, path = match.group(1), match.group(2)
        return f"<!-- {kind} {path} -->\n{_generated(kind, path)}\n<!-- /bench -->"

    return _BLOCK.sub(block, text)


def stale(doc: Path) -> list[str]:
    """The blocks of `doc` that differ from their files, or whose file cannot be read, with why."""
    found = []
    for match in _BLOCK.finditer(doc.read_text()):
        kind, path = match.group(1), match.group(2)
        try:
            fresh = _generated(kind, path) + "\n"
        except (OSError, ValueError) as exc:
            found.append(f"{path} ({exc})")
            continue
        if match.group(3) != fresh:
            found.append(path)
    return found


def main(argv: list[str]) -> int:
    check = "--check" in argv
    docs = [Path(a) for a in argv if a != "--check"] or sorted((ROOT / "docs").glob("*.md"))
    status = 0
    for doc in docs:
        if check:
            for path in stale(doc):
                print(f"{doc}: the table for {path} is stale: run python docs/benchtables.py", file=sys.stderr)
                status = 1
        else:
            try:
                doc.write_text(synced(doc.read_text()))
            except (OSError, ValueError) as exc:
                print(f"{doc}: {exc}", file=sys.stderr)
                status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
