"""`bpfscope bench ringbuf|maps|xdp|startup|guard|opensnoop|agent|all [--json] [--save DIR]`: measures
on this kernel, each figure beside its target and its reference from the same run. A missed target is
a result, not an error: the exit status is 1 only when a benchmark could not run. `--save DIR` also
writes each benchmark's run to DIR/<benchmark>.jsonl (the machine first, then the figures), the files
docs/benchtables.py makes the docs' tables from."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from typing import Any

from ..errors import BpfscopeError

BENCHMARKS = ("ringbuf", "maps", "xdp", "startup", "guard", "opensnoop", "agent")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("benchmark", choices=[*BENCHMARKS, "all"], help="which benchmark to run")
    parser.add_argument("--json", action="store_true", help="one JSON object per figure instead of tables")
    parser.add_argument("--save", metavar="DIR",
                        help="also write each benchmark's run to DIR/<benchmark>.jsonl: a line describing "
                             "the machine, then the figures (docs/benchtables.py reads these)")
    parser.add_argument("--note", default="",
                        help="a remark saved in the machine line with --save, e.g. 'quiet machine'")


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


def _command(args: argparse.Namespace) -> str:
    """The command that made a saved run (its --note is saved beside it)."""
    return " ".join(["bpfscope", "bench", args.benchmark, *(["--json"] if args.json else []), "--save", args.save])


def run(args: argparse.Namespace) -> int:
    from ..benchmarks import report

    if args.save:
        try:
            os.makedirs(args.save, exist_ok=True)
        except OSError as exc:
            print(f"bpfscope bench: --save {args.save}: {exc.strerror}", file=sys.stderr)
            return 2
    names = BENCHMARKS if args.benchmark == "all" else (args.benchmark,)
    if not args.json:
        m = report.machine()
        print(f"bpfscope bench on Linux {m['kernel']}, {m['cpu']} ({m['cpus']} CPUs), "
              f"Python {m['python']}, {m['date']}")
    failed = False
    for name in names:
        print(f"running {name}…", file=sys.stderr, flush=True)
        header = report.machine() if args.save else {}  # the load average just before this benchmark
        started = time.monotonic()
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
        if args.save:
            header.update(command=_command(args), seconds=f"{time.monotonic() - started:.0f}")
            if args.note:
                header["note"] = args.note
            path = os.path.join(args.save, f"{name}.jsonl")
            report.save(path, header, figures)
            print(f"saved {path}", file=sys.stderr)
    return 1 if failed else 0
