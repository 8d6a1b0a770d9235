"""`bpfscope bench ringbuf|maps|xdp|startup|guard|opensnoop|agent|all [--json]`: measures on this kernel,
each figure beside its target and its reference from the same run. A missed target is a result, not an error: the exit
status is 1 only when a benchmark could not run."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from ..errors import BpfscopeError

BENCHMARKS = ("ringbuf", "maps", "xdp", "startup", "guard", "opensnoop", "agent")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("benchmark", choices=[*BENCHMARKS, "all"], help="which benchmark to run")
    parser.add_argument("--json", action="store_true", help="one JSON object per figure instead of tables")


def _module(name: str) -> Any:
    """The benchmark's module, or None (after saying so) while it does not exist yet."""
    qualified = f"bpfscope.benchmarks.{name}"
    try:
        return importlib.import_module(qualified)
    except ModuleNotFoundError as exc:
        if exc.name != qualified:
            raise
        print(f"bpfscope bench {name}: not available yet (no module {qualified})", file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    from ..benchmarks import report

    names = BENCHMARKS if args.benchmark == "all" else (args.benchmark,)
    if not args.json:
        m = report.machine()
        print(f"bpfscope bench on Linux {m['kernel']}, {m['cpu']} ({m['cpus']} CPUs), "
              f"Python {m['python']}, {m['date']}")
    failed = False
    for name in names:
        print(f"running {name}…", file=sys.stderr, flush=True)
        try:
            module = _module(name)
            if module is None:
                failed = True
                continue
            figures = module.run()
        except Exception as exc:  # one line, then the other benchmarks; a bug also names its type
            detail = str(exc) if isinstance(exc, (BpfscopeError, OSError)) else f"{type(exc).__name__}: {exc}"
            print(f"bpfscope bench {name}: {detail}", file=sys.stderr)
            failed = True
            continue
        print(report.json_lines(figures) if args.json else "\n" + report.table(name, figures), flush=True)
    return 1 if failed else 0
