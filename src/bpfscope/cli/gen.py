"""`bpfscope gen FILE.bpf.c`: compile a program and write its typed Python module and .pyi beside it;
`--check` fails when those are stale, for CI (as bpf2go's users diff its output)."""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

from ..build import ARCHES, CompileError, CompileWarning


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="FILE.bpf.c", type=Path, help="the program")
    parser.add_argument("-o", "--output", metavar="MODULE.py", type=Path,
                        help="the module to write (default: FILE.py beside the source); the object and the .pyi "
                             "go beside it")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the module or its .pyi differs from what gen would write")
    parser.add_argument("--arch", choices=sorted(ARCHES),
                        help="the kernel's architecture (default: this machine's)")
    parser.add_argument("-I", dest="include_dirs", metavar="DIR", type=Path, action="append", default=[],
                        help="also look for headers in DIR, ahead of bpfscope's (repeatable)")


def run(args: argparse.Namespace) -> int:
    from ..gen import generate, stale

    with _clang_messages():
        if not args.check:
            print(generate(args.source, args.output, arch=args.arch, include_dirs=args.include_dirs))
            return 0
        outdated = stale(args.source, args.output, arch=args.arch, include_dirs=args.include_dirs)
    if outdated:
        again = f"bpfscope gen {args.source}" + (f" -o {args.output}" if args.output else "")
        print(f"bpfscope gen: {' and '.join(map(str, outdated))} stale for {args.source}; run {again}",
              file=sys.stderr)
        return 1
    return 0


@contextlib.contextmanager
def _clang_messages() -> Iterator[None]:
    """clang's diagnostics on stderr, as `bpfscope build` shows them: in full when it fails (then
    the error's one line), as they are when it only warns."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CompileWarning)
        try:
            yield
        except CompileError as exc:
            sys.stderr.write(exc.diagnostics)
            raise
        finally:
            for warning in caught:
                if issubclass(warning.category, CompileWarning):
                    sys.stderr.write(str(warning.message))
                else:
                    warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
