"""`bpfscope bench opensnoop`: what tracing costs the traced, the way peer tools are judged. A tight
openat + close loop in C (openloop.c, compiled here with cc -O2) is timed untraced and under each
tracer, in one run, and each traced time is given as a ratio to the untraced one:

- `bpfscope opensnoop --pid N --json` as the real command, its stdout to a file: every event
  streamed through the ring buffer, drained in numpy batches and written as a JSON line;
- `bpfscope opensnoop --pid N --count --json`: counted per comm in the kernel, nothing streamed;
- bpftrace (the peer) doing the same on the same hook, tracepoint:syscalls:sys_exit_openat, which
  is all bpfscope's opensnoop attaches to: a printf per open of the pid, comm, result, flags and
  path (read, as bpfscope reads them, from the task's saved user registers), and a count() per comm;
- with `as_typed`, also bpftrace as its users would type it: opensnoop.bt's enter/exit pair (the
  path stashed at sys_enter_openat, printed at exit) and a count() on sys_enter_openat;
- an empty BPF program on sys_exit_openat, the floor under any tracer there, and one on
  sys_enter_openat, to compare the two hooks.

Every tracer is filtered to the loop's pid in the kernel, which all of them can do. Each traced run
also counts what reached the tracer against the opens made: the events in the output (bpftrace's
lines must name the loop's path), the counts printed at the end, and what the tool says it lost;
and the tracer's own CPU time per open. The loop is pinned to one CPU and every tracer to the
others, so what a tracer costs the loop is its kernel work, and its reader's work shows in its own
CPU time, as on any machine with a core to spare. Each traced run comes right after an untraced one
and the pair gives one ratio; configurations take turns in a rotating order; each figure, ours and
bpftrace's alike, is the median of its pairs' ratios with their range."""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import os
import platform
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
from . import Figure, Rounds
from . import rounds as over_rounds
from .startup import package_env

__all__ = ["run", "STREAM_TARGET", "COUNT_TARGET"]

STREAM_TARGET = 1.25  # × untraced
COUNT_TARGET = 1.15
_LOOP_SOURCE = Path(__file__).with_name("openloop.c")
_PATH = "/dev/null"
_READY_TIMEOUT = 30.0

# The like-for-like peers: bpftrace on the one tracepoint bpfscope's opensnoop uses. At a syscall's
# exit the saved user registers (struct pt_regs, at the top of the task's kernel stack: x86-64's
# task_pt_regs) still hold its arguments: the path pointer in si, the flags in dx.
_BPFTRACE_EXIT_PRINTF = """\
tracepoint:syscalls:sys_exit_openat /pid == PID/ {
  $regs = (struct pt_regs *)((uint64)curtask->stack + STACK_TOP) - 1;
  printf("O %d %d %s %d %d %s\\n", pid, tid, comm, args->ret, $regs->dx, str(uptr($regs->si)));
}
"""
_BPFTRACE_EXIT_COUNT = """\
tracepoint:syscalls:sys_exit_openat /pid == PID/ { @[comm] = count(); }
"""
# As users type them: bpftrace's opensnoop.bt reduced to the loop's pid and openat (the same fields),
# and the one-liner count() on the enter tracepoint.
_BPFTRACE_TYPED_PRINTF = """\
tracepoint:syscalls:sys_enter_openat /pid == PID/ { @filename[tid] = args->filename; @flags[tid] = args->flags; }
tracepoint:syscalls:sys_exit_openat /@filename[tid]/ {
  printf("O %d %d %s %d %d %s\\n", pid, tid, comm, args->ret, @flags[tid], str(@filename[tid]));
  delete(@filename[tid]); delete(@flags[tid]);
}
"""
_BPFTRACE_TYPED_COUNT = """\
tracepoint:syscalls:sys_enter_openat /pid == PID/ { @[comm] = count(); }
"""


def _stack_top() -> Optional[int]:
    """Where x86-64's struct pt_regs ends above a task's stack base (THREAD_SIZE less
    TOP_OF_KERNEL_STACK_PADDING), from the kernel's config; None on other architectures."""
    if platform.machine() != "x86_64":
        return None
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            config = set(f.read().splitlines())
    except OSError:
        config = set()
    thread_size = 32768 if "CONFIG_KASAN=y" in config else 16384
    return thread_size - (16 if "CONFIG_X86_FRED=y" in config else 0)


@dataclass
class _Trial:
    ns_per_open: float  # the median of the loops under one start of the tracer
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
    """The floor: an empty BPF program on sys_exit_openat (or sys_enter_openat: `hook` "enter"),
    attached from this process."""

    def __init__(self, name: str, short: str, hook: str) -> None:
        super().__init__(name, short)
        self.hook = hook
        self._link: Optional[Link] = None
        self._obj: Optional[Object] = None

    def start(self, pid: int, tmp: str, cpus: set[int]) -> Optional[subprocess.Popen[bytes]]:
        self._obj = load(tool_object("tracepoint_bench"))
        program = self._obj.programs[f"empty_{self.hook}_openat"]
        self._link = program.attach_tracepoint("syscalls", f"sys_{self.hook}_openat")
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
        if counted:
            return _Finished(int(counted.group(1)), lost, cpu_seconds)
        printed = re.findall(r"^O .*$", text, re.MULTILINE)
        received = sum(line.endswith(f" {_PATH}") for line in printed)
        if printed and not received:
            raise BpfscopeError(errno.EIO, f"{self.name} printed no path {_PATH}, as in {printed[0]!r}: it "
                                           "could not read the path")
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
    per open is the median loop's."""
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
    return _Trial(statistics.median(ns / made for made, ns in runs), made, finished.received, finished.lost,
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


def run(*, opens: int = 100_000, rounds: int = 7, repeats: int = 3, bpftrace: Optional[str] = None,
        as_typed: bool = True) -> list[Figure]:
    """`opens` openat + close per timed loop, `repeats` loops per start of a tracer, `rounds` turns
    of every configuration. `bpftrace`: the binary (default: bpftrace on PATH; its rows are left out
    when there is none). `as_typed`: also bpftrace's programs as users type them (on the enter
    tracepoint), beside the like-for-like ones on the exit tracepoint."""
    bpftrace = bpftrace or shutil.which("bpftrace")
    allowed = sorted(os.sched_getaffinity(0))
    # The loop on one CPU, tracers on the rest; with one CPU, both share it.
    cpus = ({allowed[0]}, set(allowed[1:])) if len(allowed) > 1 else (set(), set())
    with tempfile.TemporaryDirectory(prefix="bpfscope-bench-") as tmp:
        env = package_env(os.path.join(tmp, "pycache"))
        stream = _Bpfscope(_NAMES["stream"], "stream", (), env)
        count = _Bpfscope(_NAMES["count"], "count", ("--count",), env)
        configs: list[_Config] = [_Untraced("untraced", "untraced"), _EmptyProgram(_NAMES["floor"], "floor", "exit"),
                                  _EmptyProgram(_NAMES["floor-enter"], "floor-enter", "enter"), stream, count]
        if bpftrace:
            configs += _bpftrace_configs(bpftrace, as_typed)
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
    return _figures(trials, bare_before, opens, rounds, repeats)


_NAMES = {
    "floor": "empty BPF program on sys_exit_openat",
    "floor-enter": "empty BPF program on sys_enter_openat",
    "stream": "bpfscope opensnoop (streaming)",
    "count": "bpfscope opensnoop --count",
    "bt-printf": "bpftrace printf on sys_exit_openat (like-for-like)",
    "bt-count": "bpftrace count() on sys_exit_openat (like-for-like)",
    "bt-printf-typed": "bpftrace opensnoop.bt printf, sys_enter + sys_exit (as users type it)",
    "bt-count-typed": "bpftrace count() on sys_enter_openat (as users type it)",
}
# Each bpfscope figure beside bpftrace's like-for-like one; each typed form beside its like-for-like one;
# the enter hook beside the exit one.
_PEERS = {"floor-enter": "floor", "stream": "bt-printf", "count": "bt-count", "bt-printf-typed": "bt-printf",
          "bt-count-typed": "bt-count"}


def _bpftrace_configs(binary: str, as_typed: bool) -> list[_Config]:
    configs: list[_Config] = []
    stack_top = _stack_top()
    if stack_top is not None:  # where the saved registers are is known for x86-64 only
        configs.append(_Bpftrace(_NAMES["bt-printf"], "bt-printf",
                                 _BPFTRACE_EXIT_PRINTF.replace("STACK_TOP", str(stack_top)), binary))
    configs.append(_Bpftrace(_NAMES["bt-count"], "bt-count", _BPFTRACE_EXIT_COUNT, binary))
    if as_typed:
        configs += [_Bpftrace(_NAMES["bt-printf-typed"], "bt-printf-typed", _BPFTRACE_TYPED_PRINTF, binary),
                    _Bpftrace(_NAMES["bt-count-typed"], "bt-count-typed", _BPFTRACE_TYPED_COUNT, binary)]
    return configs


def _figures(trials: dict[str, list[_Trial]], bare_before: dict[str, list[_Trial]], opens: int, rounds: int,
             repeats: int) -> list[Figure]:
    # Each traced run over the untraced one just before it: one ratio per pair, and what the
    # tracer added per open; each figure is the median over the pairs, with their range.
    ratio = {short: over_rounds(t.ns_per_open / b.ns_per_open for t, b in zip(trials[short], bare))
             for short, bare in bare_before.items()}
    added = {short: over_rounds(t.ns_per_open - b.ns_per_open for t, b in zip(trials[short], bare))
             for short, bare in bare_before.items()}
    spent = {short: over_rounds(1e9 * t.cpu_seconds / t.opens for t in trials[short])
             for short in bare_before if not short.startswith("floor")}

    def note(short: str) -> str:
        made = sum(t.opens for t in trials[short])
        got = sum(t.received for t in trials[short])
        lost = sum(t.lost for t in trials[short])
        how = (f"each of {rounds} pairs: the median of {repeats} loops of {opens:,} openat+close of {_PATH} under "
               f"the tracer ÷ the same untraced just before; median of the pairs, range beside it")
        return how if short.startswith("floor") else f"{how}; received {got:,} of {made:,} opens, {lost:,} lost"

    def figure(short: str, what: str, of: dict[str, tuple[float, Rounds]], unit: str, note: str,
               target: Optional[float] = None) -> Figure:
        value, spread = of[short]
        peer = _PEERS.get(short)
        reference, reference_spread = of.get(peer, (None, None)) if peer else (None, None)
        return Figure("opensnoop", f"{_NAMES[short]}: {what}", value, unit, False, target=target,
                      reference=f"{_NAMES[peer]}" if peer and reference is not None else None,
                      reference_value=reference, spread=spread, reference_spread=reference_spread, note=note)

    untraced, untraced_spread = over_rounds(t.ns_per_open for t in trials["untraced"])
    figures = [
        Figure("opensnoop", "untraced openat+close loop (C, pinned to one CPU)", untraced, "ns/open", False,
               spread=untraced_spread, note=f"the median of {repeats} loops of {opens:,} per start, median over "
                                            f"{len(trials['untraced'])} starts, range beside it"),
        figure("stream", "traced ÷ untraced", ratio, "×", note("stream"), target=STREAM_TARGET),
        figure("count", "traced ÷ untraced", ratio, "×", note("count"), target=COUNT_TARGET),
    ]
    figures += [figure(short, "traced ÷ untraced", ratio, "×", note(short))
                for short in bare_before if short not in ("stream", "count")]
    figures += [figure(short, "added per open", added, "ns/open",
                       "each pair's traced − untraced time per open; median of the pairs, range beside it")
                for short in bare_before]
    figures += [figure(short, "tracer's own CPU per open", spent, "ns/open",
                       "the tracer process's CPU time from the loop's start to its own exit (start-up left out), "
                       "on the other CPUs, per open; median over its starts, range beside it")
                for short in spent]
    return figures
