"""`bpfscope gen FILE.bpf.c`: compile a program and write its typed Python module and .pyi beside it;
`--check` fails when those are stale, for CI (as bpf2go's users diff its output)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .build import add_compile_arguments, clang_messages


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="FILE.bpf.c", type=Path, help="the program")
    parser.add_argument("-o", "--output", metavar="MODULE.py", type=Path,
                        help="the module to write (default: FILE.py beside the source); the object and the .pyi "
                             "go beside it")
    parser.add_argument("--type", metavar="NAME", action="append", default=[], dest="types",
                        help="also make a class of this struct, union or enum (or typedef of one) of the object's BTF "
                             "that no map, global or BTF_EXPORT uses, as bpf2go's -type; repeatable. The type must be "
                             "in the BTF: clang leaves out types used only in local variables")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the module or its .pyi differs from what gen would write")
    add_compile_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from .._gen import generate, stale

    with clang_messages():
        if not args.check:
            print(generate(args.source, args.output, arch=args.arch, include_dirs=args.include_dirs,
                           types=args.types))
            return 0
        outdated = stale(args.source, args.output, arch=args.arch, include_dirs=args.include_dirs, types=args.types)
    if outdated:
        again = f"bpfscope gen {args.source}" + (f" -o {args.output}" if args.output else "")
        again += "".join(f" --type {name}" for name in args.types)
        print(f"bpfscope gen: {' and '.join(map(str, outdated))} stale for {args.source}; run {again}",
              file=sys.stderr)
        return 1
    return 0
