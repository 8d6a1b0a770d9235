"""`bpfscope`: one command, one module per subcommand. Every bpfscope error becomes one line on
stderr and a non-zero exit; nothing is left attached because links close with their process."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn, Optional, Sequence

from ..__about__ import __version__

# subcommand → module in bpfscope.cli; each module has `add_arguments(parser)` and `run(args) -> int`.
# Modules are imported only for the subcommand that runs, so start-up stays fast.
SUBCOMMANDS = {
    "packets": ("packets", "count packets and bytes by protocol on an interface (XDP)"),
    "flows": ("flows", "track connections on an interface: packets, bytes, flags per flow and direction (tc)"),
    "guard": ("guard", "drop floods: a per-source rate limit with allow and deny lists (XDP)"),
    "tcmon": ("tcmon", "watch traffic for scans, SYN floods, denied addresses and payload patterns (tc)"),
    "opensnoop": ("opensnoop", "trace file opens: pid, comm, path, fd or error (syscall tracepoints)"),
    "execsnoop": ("execsnoop", "trace new programs: pid, ppid, uid, arguments, result (tracepoints)"),
    "funclatency": ("funclatency", "time a function in a binary or library as a log2 histogram (uprobes)"),
    "httptrace": ("httptrace", "trace HTTP/1.x requests of any process, plain and OpenSSL (tracepoints, uprobes)"),
    "agent": ("agent", "run tools together and serve their metrics to Prometheus (and OTLP)"),
    "doctor": ("doctor", "check what this kernel and this process can run"),
    "build": ("build", "compile your own .bpf.c into a CO-RE object with bpfscope's headers"),
    "gen": ("gen", "compile a .bpf.c and write a typed Python module for it (the bpf2go step)"),
    "inspect": ("inspect", "what is loaded: programs, maps, links, pins, network attachments; verify an object"),
    "bench": ("bench", "measure bpfscope against its peers on this kernel"),
}

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, as every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser(selected: Optional[str]) -> argparse.ArgumentParser:
    parser = _Parser(prog="bpfscope", description="eBPF observability for Python")
    parser.add_argument("--version", action="version", version=f"bpfscope {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="on a verifier rejection, show the log's tail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            importlib.import_module(f".{module}", __package__).add_arguments(sub_parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # numpy's OpenBLAS starts a thread per CPU at import; bpfscope does no linear algebra, and the agent
    # must have no thread of its own before it drops capabilities (each thread keeps its own).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    selected = next((a for a in argv if a in SUBCOMMANDS), None)
    args = _parser(selected).parse_args(argv)
    from ..errors import BpfscopeError, VerifierError

    try:
        module = importlib.import_module(f".{SUBCOMMANDS[args.command][0]}", __package__)
        return int(module.run(args))
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
