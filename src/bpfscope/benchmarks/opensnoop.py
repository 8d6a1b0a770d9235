"""`bpfscope bench opensnoop`: what tracing costs the traced, the way peer tools are judged. A tight
openat + close loop in C (openloop.c, compiled here with cc -O2) is timed untraced and under each
tracer, in one run, and each traced time is given as a ratio to the untraced one:

- `bpfscope opensnoop --pid N --json` as the real command, its stdout to a file: every event
  streamed through the ring buffer, drained in numpy batches and written as a JSON line;
- `bpfscope opensnoop --pid N --count --json`: counted per comm in the kernel, nothing streamed;
- bpftrace (the peer) doing the same: the enter/exit pair with a printf per open, and a count().

Every tracer is filtered to the loop's pid in the kernel, which all of them can do. Each traced run
also counts what reached the tracer against the opens made: the events in the output, the counts
printed at the end, and what the tool says it lost. The loop is pinned to one CPU, so a tracer's
reader runs beside it as it would on any machine with a core to spare. Each traced run comes right
after an untraced one and is divided by it; configurations take turns in a rotating order, and
each ratio is the median over the rounds."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import BpfscopeError
from . import Figure
from .startup import package_env

__all__ = ["run", "STREAM_TARGET", "COUNT_TARGET"]

STREAM_TARGET = 1.25  # × untraced
COUNT_TARGET = 1.15
_LOOP_SOURCE = Path(__file__).with_name("openloop.c")
_PATH = "/dev/null"
_READY_TIMEOUT = 30.0

# bpftrace's opensnoop.bt reduced to the loop's pid and openat: the same fields bpfscope prints.
_BPFTRACE_PRINTF = """\
tracepoint:syscalls:sys_enter_openat /pid == PID/ { @filename[tid] = args->filename; @flags[tid] = args->flags; }
tracepoint:syscalls:sys_exit_openat /@filename[tid]/ {
  printf("O %d %d %s %d %d %s\\n", pid, tid, comm, args->ret, @flags[tid], str(@filename[tid]));
  delete(@filename[tid]); delete(@flags[tid]);
}
"""
_BPFTRACE_COUNT = """\
tracepoint:syscalls:sys_enter_openat /pid == PID/ { @[comm] = count(); }
"""


@dataclass
class _Trial:
    ns_per_open: float
    opens: int
    received: int  # events or counts that reached the tracer's output
    lost: int  # what the tracer says it lost


class _Config:
    """How to start one tracer on pid N, know that it is attached, and read what it got."""

    def __init__(self, name: str, short: str) -> None:
        self.name = name
        self.short = short

    def start(self, pid: int, tmp: str) -> Optional[subprocess.Popen[bytes]]:
        return None

    def finish(self, proc: Optional[subprocess.Popen[bytes]], tmp: str) -> tuple[int, int]:
        return 0, 0


class _Untraced(_Config):
    pass


class _Bpfscope(_Config):
    def __init__(self, name: str, short: str, extra: tuple[str, ...], env: dict[str, str]) -> None:
        super().__init__(name, short)
        self.extra = extra
        self.env = env

    def start(self, pid: int, tmp: str) -> Optional[subprocess.Popen[bytes]]:
        out = open(os.path.join(tmp, "bpfscope.out"), "wb")
        with out:
            proc = subprocess.Popen([sys.executable, "-m", "bpfscope.cli.main", "opensnoop", "--pid", str(pid),
                                     "--json", *self.extra], stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.PIPE, env=self.env)
        assert proc.stderr is not None
        first = proc.stderr.readline().decode()  # printed once every tracepoint is attached
        if not first.startswith("bpfscope opensnoop: "):
            _kill(proc)
            raise BpfscopeError(errno.EIO, f"bpfscope opensnoop did not start: {first.strip()}")
        return proc

    def finish(self, proc: Optional[subprocess.Popen[bytes]], tmp: str) -> tuple[int, int]:
        assert proc is not None
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        if proc.returncode != 0:
            raise BpfscopeError(errno.EIO, f"bpfscope opensnoop failed: {err.decode().strip()}")
        with open(os.path.join(tmp, "bpfscope.out"), "rb") as f:
            lines = f.read().splitlines()
        final = json.loads(lines[-1])
        received = final["opens"] if "counts" in final else len(lines) - 1
        return received, int(final["lost"])


class _Bpftrace(_Config):
    def __init__(self, name: str, short: str, program: str, binary: str) -> None:
        super().__init__(name, short)
        self.program = program
        self.binary = binary

    def start(self, pid: int, tmp: str) -> Optional[subprocess.Popen[bytes]]:
        out = os.path.join(tmp, "bpftrace.out")
        proc = subprocess.Popen([self.binary, "-o", out, "-e", self.program.replace("PID", str(pid))],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # Its output is block-buffered in a file (as it is whenever it is not on a terminal), so
        # "attached" is read from the kernel: the tracepoints that hold one of its programs.
        wanted = set(re.findall(r"tracepoint:syscalls:(\w+)", self.program))
        deadline = time.monotonic() + _READY_TIMEOUT
        while not wanted <= _tracepoints_of(proc.pid):
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.communicate()[1].decode().strip() if proc.poll() is not None else "not attached in 30 s"
                _kill(proc)
                raise BpfscopeError(errno.EIO, f"bpftrace did not start: {err}")
            time.sleep(0.01)
        return proc

    def finish(self, proc: Optional[subprocess.Popen[bytes]], tmp: str) -> tuple[int, int]:
        assert proc is not None
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
        with open(os.path.join(tmp, "bpftrace.out"), "rb") as f:
            text = f.read().decode(errors="replace")
        os.unlink(os.path.join(tmp, "bpftrace.out"))
        lost = sum(int(n) for n in re.findall(r"Lost (\d+) events", text))
        counted = re.search(r"^@\[[^\]]*\]: (\d+)$", text, re.MULTILINE)
        received = int(counted.group(1)) if counted else text.count("\nO ") + text.startswith("O ")
        return received, lost


def _tracepoints_of(pid: int) -> set[str]:
    """The tracepoints with a BPF program attached through a perf event fd of process `pid`."""
    shown = subprocess.run(["bpftool", "-j", "perf", "list"], capture_output=True, text=True)
    if shown.returncode != 0:
        raise BpfscopeError(errno.EIO, f"bpftool perf list: {shown.stderr.strip()}")
    return {e["tracepoint"] for e in json.loads(shown.stdout or "[]")
            if e.get("pid") == pid and e.get("fd_type") == "tracepoint"}


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


class _Loop:
    """openloop, started and waiting for its go: the pid is known before any tracer starts."""

    def __init__(self, binary: str, opens: int, cpu: Optional[int]) -> None:
        def pin() -> None:
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})

        self.proc = subprocess.Popen([binary, _PATH, str(opens)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     preexec_fn=pin)
        assert self.proc.stdout is not None
        self.pid = int(self.proc.stdout.readline())

    def go(self) -> tuple[int, int, int]:
        out, _ = self.proc.communicate(b"go\n", timeout=120)
        opens, failed, nanoseconds = map(int, out.split())
        if failed:
            raise BpfscopeError(errno.EIO, f"openloop: {failed} of {opens} opens of {_PATH} failed")
        return opens, failed, nanoseconds

    def kill(self) -> None:
        _kill(self.proc)


def _trial(config: _Config, binary: str, opens: int, cpu: Optional[int], tmp: str) -> _Trial:
    loop = _Loop(binary, opens, cpu)
    tracer = None
    try:
        tracer = config.start(loop.pid, tmp)
        made, _, nanoseconds = loop.go()
    except BaseException:
        loop.kill()
        if tracer is not None:
            _kill(tracer)
        raise
    received, lost = config.finish(tracer, tmp)
    return _Trial(nanoseconds / made, made, received, lost)


def _build_loop(tmp: str) -> str:
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        raise BpfscopeError(errno.EIO, "no C compiler (cc, gcc or clang) to build the openat loop")
    binary = os.path.join(tmp, "openloop")
    built = subprocess.run([compiler, "-O2", "-o", binary, str(_LOOP_SOURCE)], capture_output=True, text=True)
    if built.returncode != 0:
        first = (built.stderr.strip().splitlines() or ["failed"])[0]
        raise BpfscopeError(errno.EIO, f"{os.path.basename(compiler)} could not build openloop.c: {first}")
    return binary


def run(*, opens: int = 100_000, rounds: int = 5, bpftrace: Optional[str] = None) -> list[Figure]:
    """`opens` openat + close per timed loop, `rounds` turns of every configuration. `bpftrace`: the
    binary (default: bpftrace on PATH; its rows are left out when there is none)."""
    bpftrace = bpftrace or shutil.which("bpftrace")
    cpus = sorted(os.sched_getaffinity(0))
    cpu = cpus[0] if len(cpus) > 1 else None
    with tempfile.TemporaryDirectory(prefix="bpfscope-bench-") as tmp:
        env = package_env(os.path.join(tmp, "pycache"))
        stream = _Bpfscope("bpfscope opensnoop (streaming)", "stream", (), env)
        count = _Bpfscope("bpfscope opensnoop --count", "count", ("--count",), env)
        configs: list[_Config] = [_Untraced("untraced", "untraced"), stream, count]
        if bpftrace:
            configs += [_Bpftrace("bpftrace printf (opensnoop.bt)", "bt-printf", _BPFTRACE_PRINTF, bpftrace),
                        _Bpftrace("bpftrace count()", "bt-count", _BPFTRACE_COUNT, bpftrace)]
        binary = _build_loop(tmp)
        _trial(stream, binary, 1000, cpu, tmp)  # warm up: bytecode cache, page cache, BTF
        trials: dict[str, list[_Trial]] = {c.short: [] for c in configs}
        ratios: dict[str, list[float]] = {c.short: [] for c in configs[1:]}
        traced = configs[1:]
        for r in range(rounds):
            # Each traced run right after an untraced one: the ratio of the pair cancels whatever
            # else the machine was doing for those few seconds.
            for config in traced[r % len(traced):] + traced[:r % len(traced)]:
                bare = _trial(configs[0], binary, opens, cpu, tmp)
                trial = _trial(config, binary, opens, cpu, tmp)
                trials["untraced"].append(bare)
                trials[config.short].append(trial)
                ratios[config.short].append(trial.ns_per_open / bare.ns_per_open)
    return _figures(configs, trials, ratios, opens, rounds, bool(bpftrace))


def _figures(configs: list[_Config], trials: dict[str, list[_Trial]], ratios: dict[str, list[float]], opens: int,
             rounds: int, have_bpftrace: bool) -> list[Figure]:
    untraced = statistics.median(t.ns_per_open for t in trials["untraced"])
    ratio = {short: statistics.median(values) for short, values in ratios.items()}
    names = {c.short: c.name for c in configs}

    def note(short: str) -> str:
        made = sum(t.opens for t in trials[short])
        got = sum(t.received for t in trials[short])
        lost = sum(t.lost for t in trials[short])
        spread = f"{min(ratios[short]):.2f} to {max(ratios[short]):.2f}×"
        return (f"median of {rounds} runs of {opens:,} openat+close of {_PATH}, each ÷ the untraced run just "
                f"before it (range {spread}); received {got:,} of {made:,} opens, {lost:,} lost")

    figures = [Figure("opensnoop", "untraced openat+close loop (C, pinned to one CPU)", untraced, "ns/open", False,
                      note=f"median of {len(trials['untraced'])} runs of {opens:,}")]
    for short, target, peer in (("stream", STREAM_TARGET, "bt-printf"), ("count", COUNT_TARGET, "bt-count")):
        figures.append(Figure(
            "opensnoop", f"{names[short]}: traced ÷ untraced", ratio[short], "×", False, target=target,
            reference=names[peer] if have_bpftrace else None,
            reference_value=ratio[peer] if have_bpftrace else None, note=note(short)))
    if have_bpftrace:
        for short in ("bt-printf", "bt-count"):
            figures.append(Figure("opensnoop", f"{names[short]}: traced ÷ untraced", ratio[short], "×", False,
                                  note=note(short)))
    for c in configs[1:]:
        figures.append(Figure("opensnoop", f"{c.name}: added per open", (ratio[c.short] - 1) * untraced, "ns/open",
                              False, note="(ratio − 1) × untraced"))
    return figures
