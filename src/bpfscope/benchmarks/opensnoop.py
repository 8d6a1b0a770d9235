"""`bpfscope bench opensnoop`: what tracing costs the traced, the way peer tools are judged. A tight
openat + close loop in C (openloop.c, compiled here with cc -O2) is timed untraced and under each
tracer, in one run, and each traced time is given as a ratio to the untraced one:

- `bpfscope opensnoop --pid N --json` as the real command, its stdout to a file: every event
  streamed through the ring buffer, drained in numpy batches and written as a JSON line;
- `bpfscope opensnoop --pid N --count --json`: counted per comm in the kernel, nothing streamed;
- bpftrace (the peer) doing the same: the enter/exit pair with a printf per open, and a count().

Every tracer is filtered to the loop's pid in the kernel, which all of them can do. Each traced run
also counts what reached the tracer against the opens made: the events in the output, the counts
printed at the end, and what the tool says it lost; and the tracer's own CPU time (user + system,
from its rusage) per open. The loop is pinned to one CPU and every tracer to the others, so what a
tracer costs the loop is its kernel work, and its reader's work shows in its own CPU time, as on
any machine with a core to spare. Each traced run comes right after an untraced one; configurations
take turns in a rotating order; each ratio is the fastest traced run over the fastest of the untraced
runs paired with them, with the median and range of the per-pair ratios in the note."""

from __future__ import annotations

import contextlib
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
from typing import Callable, Optional

from ..errors import BpfscopeError
from ..link import Link
from ..object import Object, load, tool_object
from . import Figure
from .startup import package_env

__all__ = ["run", "STREAM_TARGET", "COUNT_TARGET"]

STREAM_TARGET = 1.25  # × untraced
COUNT_TARGET = 1.15
_LOOP_SOURCE = Path(__file__).with_name("openloop.c")
_PATH = "/dev/null"
_READY_TIMEOUT = 30.0
_FLOOR = "empty BPF program on sys_exit_openat"

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
    cpu_seconds: float  # the tracer's user + system time, start to exit


@dataclass
class _Finished:
    received: int
    lost: int
    cpu_seconds: float


class _Config:
    """How to start one tracer on pid N (on `cpus`), know that it is attached, and read what it got."""

    def __init__(self, name: str, short: str) -> None:
        self.name = name
        self.short = short

    def start(self, pid: int, tmp: str, cpus: set[int]) -> Optional[subprocess.Popen[bytes]]:
        return None

    def finish(self, proc: Optional[subprocess.Popen[bytes]], tmp: str) -> _Finished:
        return _Finished(0, 0, 0.0)


class _Untraced(_Config):
    pass


class _EmptyProgram(_Config):
    """The floor: an empty BPF program on sys_exit_openat, attached from this process."""

    def __init__(self, name: str, short: str) -> None:
        super().__init__(name, short)
        self._link: Optional[Link] = None
        self._obj: Optional[Object] = None

    def start(self, pid: int, tmp: str, cpus: set[int]) -> Optional[subprocess.Popen[bytes]]:
        self._obj = load(tool_object("tracepoint_bench"))
        self._link = self._obj.programs["empty_exit_openat"].attach_tracepoint("syscalls", "sys_exit_openat")
        return None

    def finish(self, proc: Optional[subprocess.Popen[bytes]], tmp: str) -> _Finished:
        for held in (self._link, self._obj):
            if held is not None:
                held.close()
        self._link = self._obj = None
        return _Finished(0, 0, 0.0)


class _Bpfscope(_Config):
    def __init__(self, name: str, short: str, extra: tuple[str, ...], env: dict[str, str]) -> None:
        super().__init__(name, short)
        self.extra = extra
        self.env = env

    def start(self, pid: int, tmp: str, cpus: set[int]) -> Optional[subprocess.Popen[bytes]]:
        out = open(os.path.join(tmp, "bpfscope.out"), "wb")
        with out:
            proc = subprocess.Popen([sys.executable, "-m", "bpfscope.cli.main", "opensnoop", "--pid", str(pid),
                                     "--json", *self.extra], stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.PIPE, env=self.env, preexec_fn=_pinned(cpus))
        assert proc.stderr is not None
        first = proc.stderr.readline().decode()  # printed once every tracepoint is attached
        if not first.startswith("bpfscope opensnoop: "):
            _kill(proc)
            raise BpfscopeError(errno.EIO, f"bpfscope opensnoop did not start: {first.strip()}")
        return proc

    def finish(self, proc: Optional[subprocess.Popen[bytes]], tmp: str) -> _Finished:
        assert proc is not None
        proc.send_signal(signal.SIGTERM)
        err, cpu_seconds = _reap(proc)
        if proc.returncode != 0:
            raise BpfscopeError(errno.EIO, f"bpfscope opensnoop failed: {err.decode().strip()}")
        with open(os.path.join(tmp, "bpfscope.out"), "rb") as f:
            lines = f.read().splitlines()
        final = json.loads(lines[-1])
        received = final["opens"] if "counts" in final else len(lines) - 1
        return _Finished(received, int(final["lost"]), cpu_seconds)


class _Bpftrace(_Config):
    def __init__(self, name: str, short: str, program: str, binary: str) -> None:
        super().__init__(name, short)
        self.program = program
        self.binary = binary

    def start(self, pid: int, tmp: str, cpus: set[int]) -> Optional[subprocess.Popen[bytes]]:
        out = os.path.join(tmp, "bpftrace.out")
        proc = subprocess.Popen([self.binary, "-o", out, "-e", self.program.replace("PID", str(pid))],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                preexec_fn=_pinned(cpus))
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

    def finish(self, proc: Optional[subprocess.Popen[bytes]], tmp: str) -> _Finished:
        assert proc is not None
        proc.send_signal(signal.SIGINT)
        _, cpu_seconds = _reap(proc)
        with open(os.path.join(tmp, "bpftrace.out"), "rb") as f:
            text = f.read().decode(errors="replace")
        os.unlink(os.path.join(tmp, "bpftrace.out"))
        lost = sum(int(n) for n in re.findall(r"Lost (\d+) events", text))
        counted = re.search(r"^@\[[^\]]*\]: (\d+)$", text, re.MULTILINE)
        received = int(counted.group(1)) if counted else text.count("\nO ") + text.startswith("O ")
        return _Finished(received, lost, cpu_seconds)


def _pinned(cpus: set[int]) -> Callable[[], None]:
    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    return pin


def _reap(proc: subprocess.Popen[bytes]) -> tuple[bytes, float]:
    """Waits for `proc` to end; its stderr, and the CPU time it used (user + system, from rusage)."""
    assert proc.stderr is not None
    err = proc.stderr.read()  # to its end: the process has exited or is exiting
    proc.stderr.close()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return err, usage.ru_utime + usage.ru_stime


def _cpu_seconds(pid: int) -> float:
    """CPU time used so far by every thread of process `pid` (schedstat: nanoseconds on a CPU)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    return total / 1e9


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

    def __init__(self, binary: str, opens: int, cpus: set[int]) -> None:
        self.proc = subprocess.Popen([binary, _PATH, str(opens)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     preexec_fn=_pinned(cpus))
        assert self.proc.stdout is not None
        self.pid = int(self.proc.stdout.readline())

    def go(self) -> tuple[int, int]:
        """Runs the loop once: (opens, nanoseconds)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()
        opens, failed, nanoseconds = map(int, self.proc.stdout.readline().split())
        if failed:
            raise BpfscopeError(errno.EIO, f"openloop: {failed} of {opens} opens of {_PATH} failed")
        return opens, nanoseconds

    def end(self) -> None:
        self.proc.communicate(timeout=60)  # end of input ends it

    def kill(self) -> None:
        _kill(self.proc)


def _trial(config: _Config, binary: str, opens: int, repeats: int, cpus: tuple[set[int], set[int]],
           tmp: str) -> _Trial:
    """`repeats` timed loops on cpus[0] under one start of `config`'s tracer on cpus[1]; the time
    per open is the fastest loop's."""
    loop = _Loop(binary, opens, cpus[0])
    tracer = None
    try:
        tracer = config.start(loop.pid, tmp, cpus[1])
        started = _cpu_seconds(tracer.pid) if tracer is not None else 0.0  # its start-up is not the loop's cost
        runs = [loop.go() for _ in range(repeats)]
        loop.end()
    except BaseException:
        loop.kill()
        if tracer is not None:
            _kill(tracer)
        raise
    finished = config.finish(tracer, tmp)
    made = sum(made for made, _ in runs)
    return _Trial(min(ns / made for made, ns in runs), made, finished.received, finished.lost,
                  finished.cpu_seconds - started)


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


def run(*, opens: int = 100_000, rounds: int = 7, repeats: int = 3, bpftrace: Optional[str] = None) -> list[Figure]:
    """`opens` openat + close per timed loop, `repeats` loops per start of a tracer, `rounds` turns
    of every configuration. `bpftrace`: the binary (default: bpftrace on PATH; its rows are left out
    when there is none)."""
    bpftrace = bpftrace or shutil.which("bpftrace")
    allowed = sorted(os.sched_getaffinity(0))
    # The loop on one CPU, tracers on the rest; with one CPU, both share it.
    cpus = ({allowed[0]}, set(allowed[1:])) if len(allowed) > 1 else (set(), set())
    with tempfile.TemporaryDirectory(prefix="bpfscope-bench-") as tmp:
        env = package_env(os.path.join(tmp, "pycache"))
        stream = _Bpfscope("bpfscope opensnoop (streaming)", "stream", (), env)
        count = _Bpfscope("bpfscope opensnoop --count", "count", ("--count",), env)
        configs: list[_Config] = [_Untraced("untraced", "untraced"), _EmptyProgram(_FLOOR, "floor"), stream, count]
        if bpftrace:
            configs += [_Bpftrace("bpftrace printf (opensnoop.bt)", "bt-printf", _BPFTRACE_PRINTF, bpftrace),
                        _Bpftrace("bpftrace count()", "bt-count", _BPFTRACE_COUNT, bpftrace)]
        binary = _build_loop(tmp)
        _trial(stream, binary, 1000, 1, cpus, tmp)  # warm up: bytecode cache, page cache, BTF
        trials: dict[str, list[_Trial]] = {c.short: [] for c in configs}
        bare_before: dict[str, list[_Trial]] = {c.short: [] for c in configs[1:]}  # each traced run's pair
        traced = configs[1:]
        for r in range(rounds):
            # Each traced run right after an untraced one: the ratio of the pair cancels whatever
            # else the machine was doing for those few seconds.
            for config in traced[r % len(traced):] + traced[:r % len(traced)]:
                bare = _trial(configs[0], binary, opens, repeats, cpus, tmp)
                trial = _trial(config, binary, opens, repeats, cpus, tmp)
                trials["untraced"].append(bare)
                trials[config.short].append(trial)
                bare_before[config.short].append(bare)
    return _figures(configs, trials, bare_before, opens, rounds, repeats, bool(bpftrace))


def _figures(configs: list[_Config], trials: dict[str, list[_Trial]], bare_before: dict[str, list[_Trial]],
             opens: int, rounds: int, repeats: int, have_bpftrace: bool) -> list[Figure]:
    # Another process on the machine can only make a loop slower, never faster: the fastest of a
    # configuration's runs is the one least disturbed, and it is divided by the fastest of the
    # untraced runs paired with them (as timeit takes the minimum). The median of the per-pair
    # ratios goes in the note, beside their range.
    untraced = min(t.ns_per_open for t in trials["untraced"])
    ratio = {short: min(t.ns_per_open for t in trials[short]) / min(t.ns_per_open for t in bare)
             for short, bare in bare_before.items()}
    ratios = {short: [t.ns_per_open / b.ns_per_open for t, b in zip(trials[short], bare)]
              for short, bare in bare_before.items()}
    names = {c.short: c.name for c in configs}

    def note(short: str) -> str:
        made = sum(t.opens for t in trials[short])
        got = sum(t.received for t in trials[short])
        lost = sum(t.lost for t in trials[short])
        pairs = ratios[short]
        return (f"fastest of {rounds} × {repeats} loops of {opens:,} openat+close of {_PATH} ÷ fastest of the "
                f"untraced loops just before them; each pair's ratio: median {statistics.median(pairs):.2f}×, range "
                f"{min(pairs):.2f} to {max(pairs):.2f}×; received {got:,} of {made:,} opens, {lost:,} lost")

    figures = [Figure("opensnoop", "untraced openat+close loop (C, pinned to one CPU)", untraced, "ns/open", False,
                      note=f"fastest of {len(trials['untraced'])} × {repeats} loops of {opens:,}")]
    for short, target, peer in (("stream", STREAM_TARGET, "bt-printf"), ("count", COUNT_TARGET, "bt-count")):
        figures.append(Figure(
            "opensnoop", f"{names[short]}: traced ÷ untraced", ratio[short], "×", False, target=target,
            reference=names[peer] if have_bpftrace else None,
            reference_value=ratio[peer] if have_bpftrace else None, note=note(short)))
    for short in ("floor", "bt-printf", "bt-count") if have_bpftrace else ("floor",):
        figures.append(Figure("opensnoop", f"{names[short]}: traced ÷ untraced", ratio[short], "×", False,
                              note=note(short)))
    for c in configs[1:]:
        figures.append(Figure("opensnoop", f"{c.name}: added per open", (ratio[c.short] - 1) * untraced, "ns/open",
                              False, note="(ratio − 1) × untraced"))
    for c in configs[2:]:
        spent = sum(t.cpu_seconds for t in trials[c.short]) / sum(t.opens for t in trials[c.short])
        figures.append(Figure("opensnoop", f"{c.name}: tracer's own CPU per open", spent * 1e9, "ns/open", False,
                              note="the tracer process's CPU time from the loop's start to its own exit "
                                   "(start-up left out), on the other CPUs"))
    return figures
