"""`bpfscope build FILE.bpf.c`: compile your own program with bpfscope's headers, ahead of time."""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

from ..build import ARCHES, CompileError, CompileWarning, compile_object


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="FILE.bpf.c", type=Path, help="the program to compile")
    parser.add_argument("-o", "--output", metavar="OUT.bpf.o", type=Path,
                        help="where to write the object (default: FILE.bpf.o beside the source)")
    add_compile_arguments(parser)
    parser.add_argument("--verify", action="store_true",
                        help="then load it into this kernel, attaching nothing, to hear the verifier's verdict")


def add_compile_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a compile, shared with `bpfscope gen`."""
    parser.add_argument("--arch", choices=sorted(ARCHES),
                        help="the kernel's architecture (default: this machine's)")
    parser.add_argument("-I", dest="include_dirs", metavar="DIR", type=Path, action="append", default=[],
                        help="also look for headers in DIR, ahead of bpfscope's (repeatable)")


@contextlib.contextmanager
def clang_messages() -> Iterator[None]:
    """clang's diagnostics on stderr: in full when it fails (then the error's one line), as they are
    when it only warns."""
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


def run(args: argparse.Namespace) -> int:
    with clang_messages():
        output = compile_object(args.source, args.output, arch=args.arch, include_dirs=args.include_dirs)
    print(output)
    if args.verify:
        from ..object import load

        with load(output) as obj:
            print(f"verifier accepted: {', '.join(obj.programs) or 'no programs'}")
    return 0
