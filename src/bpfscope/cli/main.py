"""`bpfscope`: one command, one module per subcommand. Every bpfscope error becomes one line on
stderr and a non-zero exit; nothing is left attached because links close with their process."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn, Optional, Sequence

from ..__about__ import __version__
from ..tools import _registry as registry

# The library's own commands, each a module of bpfscope.cli with `add_arguments(parser)` and `run(args) -> int`.
# The tools come from the registry (bpfscope.tools): the runner runs each (cli/_runner.py). Only the
# selected command's modules are imported, so start-up stays fast.
LIBRARY = {
    "agent": "run tools together and serve their metrics to Prometheus (and OTLP)",
    "doctor": "check what this kernel and this process can run",
    "build": "compile your own .bpf.c into a CO-RE object with bpfscope's headers",
    "gen": "compile a .bpf.c and write a typed Python module for it (the bpf2go step)",
    "inspect": "what is loaded: programs, maps, links, pins, network attachments; verify an object",
    "bench": "measure bpfscope against its peers on this kernel",
}

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, as every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser(tools: list[str], selected: Optional[str], *, helping: bool) -> argparse.ArgumentParser:
    parser = _Parser(prog="bpfscope", description="eBPF observability for Python")
    parser.add_argument("--version", action="version", version=f"bpfscope {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="on a verifier rejection, show the log's tail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in tools:
        # A tool's help is in its module: imported for the one selected, or all for `bpfscope --help`.
        help_text = registry.tool_info(name).help if name == selected or helping and selected is None else None
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            from ._runner import add_arguments

            add_arguments(sub_parser, registry.tool_class(name))
    for name, help_text in LIBRARY.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            importlib.import_module(f".{name}", __package__).add_arguments(sub_parser)
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command in LIBRARY:
        return int(importlib.import_module(f".{args.command}", __package__).run(args))
    from ._runner import run

    return run(registry.tool_class(args.command), args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # numpy's OpenBLAS starts a thread per CPU at import; bpfscope does no linear algebra, and the agent
    # must have no thread of its own before it drops capabilities (each thread keeps its own).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    tools = registry.tool_names()
    selected = next((a for a in argv if a in LIBRARY or a in tools), None)
    helping = "-h" in argv or "--help" in argv
    from ..errors import BpfscopeError, VerifierError

    try:
        # A command's parser imports its modules, which stop at import on an architecture bpfscope lacks.
        args = _parser(tools, selected, helping=helping).parse_args(argv)
    except BpfscopeError as exc:
        print(f"bpfscope {selected}: {exc}" if selected else f"bpfscope: {exc}", file=sys.stderr)
        return EXIT_ERROR
    try:
        return _run(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except VerifierError as exc:
        print(f"bpfscope {args.command}: {exc}", file=sys.stderr)
        if args.verbose:
            print("\n".join(exc.tail()), file=sys.stderr)
        return EXIT_ERROR
    except (BpfscopeError, OSError) as exc:
        print(f"bpfscope {args.command}: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
