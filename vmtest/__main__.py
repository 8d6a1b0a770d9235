"""`make test-kernels`: the kernel-marked tests on every kernel in kernels.toml, each in its own guest.

    python -m vmtest [--kernels 5.10,6.1] [--jobs 2] [--timeout S] [--docs docs/kernels.md] [-- PYTEST ARGS]

Fetches and caches the kernels, boots each under TCG (one CPU, 512 MB, `--jobs` at a time), runs pytest
inside on the host's tree and venv, prints kernel × test outcomes and exits 1 if a test failed, a guest
timed out or a guest gave no results."""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import archive, arm64, guest, report

REPO = Path(__file__).resolve().parent.parent
# The tests of what the kernel does. Left out: benchmarks (timings under emulation mean nothing), and
# the tests that compile BPF C inside (gen, examples, build): the guests load what the host compiled,
# and test_shipped_objects loads every object the package ships.
DEFAULT_TESTS = ["tests/kernel", "tests/tools", "--ignore=tests/kernel/test_bench.py",
                 "--ignore=tests/kernel/test_gen_modules.py", "--ignore=tests/kernel/test_examples.py",
                 "--ignore=tests/kernel/test_build_load.py"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vmtest", description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", help="comma-separated kernel names from kernels.toml (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="guests at once (default: 2)")
    parser.add_argument("--timeout", type=float, default=1500, help="seconds per guest, boot to power-off")
    parser.add_argument("--memory", type=int, default=512, help="MiB per guest (default: 512)")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                        / "bpfscope" / "kernels", help="where kernel packages are kept between runs")  # fmt: skip
    parser.add_argument("--out", type=Path, default=REPO / "build" / "vmtest", help="console logs and results")
    parser.add_argument("--docs", type=Path, help="rewrite the support table in this markdown file")
    parser.add_argument("--report-only", action="store_true",
                        help="boot nothing: the table (and --docs) from the results already under --out")
    parser.add_argument("pytest_args", nargs="*", help=f"tests to run inside (default: {' '.join(DEFAULT_TESTS)})")
    args = parser.parse_args(argv)

    why_not = None if args.report_only else guest.available()
    if why_not:
        print(f"vmtest: cannot boot guests: {why_not}", file=sys.stderr)
        return 2
    kernels = archive.load_kernels()
    if args.kernels:
        wanted = args.kernels.split(",")
        unknown = set(wanted) - {k.name for k in kernels}
        if unknown:
            print(f"vmtest: no kernel {', '.join(sorted(unknown))} in {archive.KERNELS_FILE.name} "
                  f"(have {', '.join(k.name for k in kernels)})", file=sys.stderr)  # fmt: skip
            return 2
        kernels = [k for k in kernels if k.name in wanted]

    if args.report_only:
        ran = [k for k in kernels if (args.out / k.name / "run.sh").exists()]
        if not ran:  # an empty table would also wipe the support table of --docs
            print(f"vmtest: no results under {args.out} to report: run make test-kernels first", file=sys.stderr)
            return 2
        return _report([report.read(guest.finished(k, args.out / k.name)) for k in ran], args.docs, args.out)

    x86 = [k for k in kernels if k.arch == "x86_64"]
    apt = archive.PrivateApt(args.cache / "apt", {k.suite for k in x86}, {archive.DEB_ARCH["x86_64"]})
    trees = {}
    for kernel in x86:  # arm64 guests fetch theirs, and their user space, in run_arm64
        started = time.monotonic()
        trees[kernel.name] = archive.fetch(kernel, args.cache, apt)
        print(f"kernel {kernel.name}: {kernel.release} ready ({time.monotonic() - started:.0f} s)", flush=True)

    def boot(kernel: archive.Kernel) -> report.KernelResult:
        print(f"kernel {kernel.name}: booting", flush=True)
        out = args.out / kernel.name
        if kernel.arch == arm64.ARCH:
            result = arm64.run_arm64(kernel, args.cache, None, out, args.timeout, pytest_args=args.pytest_args or None)
        else:
            script = guest.pytest_script(kernel, REPO, args.pytest_args or DEFAULT_TESTS, python=sys.executable)
            user_space = guest.Root(binds=(REPO, Path(sys.prefix).resolve()))  # a checkout under /tmp too
            result = report.read(guest.run(kernel, trees[kernel.name], script, out, args.timeout, args.memory,
                                           root=user_space))
        outcome = result.outcome
        print(f"kernel {kernel.name}: done in {outcome.seconds:.0f} s, {len(result.failures)} failed", flush=True)
        return result

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(boot, kernels))

    return _report(results, args.docs, args.out)


def _report(results: list[report.KernelResult], docs: Path | None, out: Path) -> int:
    """Prints the table and what failed or was skipped; 1 if a test failed or a guest gave no result."""
    print()
    print(report.table(results))
    notes = report.details(results)
    if notes:
        print()
        print(notes)
    if docs:
        report.write_docs(results, docs)
        print(f"\nsupport table written to {docs}")
    broken = [r.label for r in results if r.failures or not r.finished]
    if broken:
        print(f"\nvmtest: failures or no results on {', '.join(broken)}; logs under {out}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
