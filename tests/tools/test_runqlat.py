"""bpfscope runqlat end to end, against the scheduler's own count: busy processes pinned to one CPU, in
cgroups of the test's own, wait for it by turns, and the total wait the tool measures for them agrees
with the `run_delay` the kernel keeps for each task (/proc/PID/schedstat, field 2) within 5 %, over the
same window: from a snapshot taken with the first reading of run_delay to one taken once every process
is stopped (SIGSTOP), so that neither count moves after the other is read. Three busy processes on one
CPU wait about two thirds of the time each: seconds of waiting in a window of 1.5 s.

This machine's kernel reports no sched_switch for a switch away from the sandbox's own agent threads
(tokio-rt-worker; ftrace sees none either), so a wait that ends there is seen by no tracepoint, while
run_delay counts it. The busy processes take turns of a millisecond, so such a wait is a small part
of the whole (measured: 0 to 2 of some 500 waits, well under 1 %).

Both forms of the programs are tried: tp_btf where the kernel has it, and the tracepoint form (as if the
probe had said no), which counts a wait that a tgid or cgroup decides at the CPU's next switch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest
from loaded import held_by, left_behind, loaded, still_loaded, unheld
from streams import start_json, stop_json

from bpfscope.features import Feature
from bpfscope.mounts import cgroup2_path
from bpfscope.testing.plugin import skip_unless_kernel_has
from bpfscope.tools.runqlat import RunqueueLatency, WaitSnapshot

BPFSCOPE = [sys.executable, "-m", "bpfscope.cli.main"]
PROGRAMS = ("wakeup_btf", "wakeup_new_btf", "switch_btf", "wakeup_tp", "wakeup_new_tp", "switch_tp")
CPU = max(os.sched_getaffinity(0))  # the CPU every busy process is pinned to
WINDOW = 1.5  # seconds the processes compete for it
AGREEMENT = 0.05  # issue 18: within 5 % of run_delay

# Joins the cgroup argv[1], pins itself to CPU argv[2], names itself argv[3] (its comm), says so, and
# stops itself; once continued, it spins, yielding the CPU every millisecond (a wait of its own, and one
# of each other runnable task). Stopped, it neither runs nor waits: a window starts with SIGCONT.
# Short turns keep any one wait small: a wait that ends at a context switch no tracepoint reports (this
# machine has them, see below) is then a small part of the whole.
SPINNER = textwrap.dedent("""
    import ctypes, os, signal, sys, time
    with open(os.path.join(sys.argv[1], "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))
    os.sched_setaffinity(0, {int(sys.argv[2])})
    ctypes.CDLL(None).prctl(15, sys.argv[3].encode(), 0, 0, 0)  # PR_SET_NAME
    print("ready", flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)
    while True:
        turn = time.perf_counter() + 0.001
        while time.perf_counter() < turn:
            pass
        os.sched_yield()
""")


class Spinners:
    """Busy processes, each in one of the test's cgroups, all pinned to CPU."""

    def __init__(self) -> None:
        root = cgroup2_path()
        if root is None:
            pytest.skip("no cgroup v2 file system mounted")
        self.root = Path(root)
        self.cgroups: dict[str, Path] = {}
        self.procs: dict[str, list[subprocess.Popen[str]]] = {}

    def start(self, group: str, count: int, comm: str) -> list[int]:
        cgroup = self.cgroups.get(group)
        if cgroup is None:
            cgroup = self.cgroups[group] = self.root / f"bpfscope-runqlat-{os.getpid()}-{group}"
            cgroup.mkdir()
        started = []
        for _ in range(count):
            proc = subprocess.Popen([sys.executable, "-c", SPINNER, str(cgroup), str(CPU), comm],
                                    stdout=subprocess.PIPE, text=True)
            self.procs.setdefault(group, []).append(proc)
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
            started.append(proc.pid)
        _wait_until_stopped(started)
        return started

    def pids(self, group: str) -> list[int]:
        return [proc.pid for proc in self.procs[group]]

    def cgroup_id(self, group: str) -> int:
        return self.cgroups[group].stat().st_ino

    def run_delay(self, group: str) -> int:
        """The group's run_delay, summed: ns its tasks waited on a run queue."""
        return sum(_schedstat(pid)[1] for pid in self.pids(group))

    def go(self) -> None:
        """SIGCONT to every process: each is woken, and from then on they compete for the CPU."""
        for pid in self._every():
            os.kill(pid, signal.SIGCONT)

    def stop(self) -> None:
        """SIGSTOP to every process, and back once each is stopped: none runs or waits any more."""
        for pid in self._every():
            os.kill(pid, signal.SIGSTOP)
        _wait_until_stopped(self._every())

    def _every(self) -> list[int]:
        return [proc.pid for procs in self.procs.values() for proc in procs]

    def close(self) -> None:
        for procs in self.procs.values():
            for proc in procs:
                proc.kill()
                proc.wait(timeout=10)
        for cgroup in self.cgroups.values():
            cgroup.rmdir()


def _schedstat(pid: int) -> tuple[int, int, int]:
    """Time on the CPU, time waiting on a run queue (run_delay), switch-ins (pcount): /proc/PID/schedstat."""
    run_time, run_delay, pcount = Path(f"/proc/{pid}/schedstat").read_text().split()
    return int(run_time), int(run_delay), int(pcount)


def _wait_until_stopped(pids: list[int]) -> None:
    deadline = time.monotonic() + 10
    while any(_state(pid) != "T" for pid in pids):
        assert time.monotonic() < deadline, "the busy processes did not stop"
        time.sleep(0.01)


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


@pytest.fixture
def spinners() -> Iterator[Spinners]:
    made = Spinners()
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(params=["tp_btf", "tracepoint"])
def form(request: pytest.FixtureRequest, pretend_missing: Callable[..., None]) -> str:
    """Each form of the programs: tp_btf (Linux 5.5+), skipped where this kernel refuses it, and the
    tracepoint form every kernel can load, tried here as if the probe had said no."""
    if request.param == "tp_btf":
        skip_unless_kernel_has(Feature.TP_BTF)
    else:
        pretend_missing(Feature.TP_BTF)
    return str(request.param)


def measured_window(runq: RunqueueLatency, spinners: Spinners,
                    groups: list[str]) -> tuple[WaitSnapshot, dict[str, int]]:
    """The tool's histograms and each group's run_delay over the same WINDOW seconds: from SIGCONT to
    SIGSTOP, the processes stopped before and after."""
    before = {group: spinners.run_delay(group) for group in groups}
    first = runq.snapshot()
    spinners.go()
    time.sleep(WINDOW)
    spinners.stop()
    after = {group: spinners.run_delay(group) for group in groups}
    return runq.snapshot() - first, {group: after[group] - before[group] for group in groups}


def assert_agrees(measured_ns: int, run_delay_ns: int) -> None:
    assert run_delay_ns > 0.5e9, f"the processes waited only {run_delay_ns / 1e6:.0f} ms: the test did not load the CPU"
    assert abs(measured_ns - run_delay_ns) <= AGREEMENT * run_delay_ns, (
        f"measured {measured_ns / 1e6:.1f} ms of waiting, run_delay says {run_delay_ns / 1e6:.1f} ms")


# --- the library --------------------------------------------------------------------------------


def test_the_wait_of_a_cgroup_agrees_with_run_delay(spinners: Spinners, form: str) -> None:
    spinners.start("mine", 3, "rq-mine")
    with RunqueueLatency(cgroup_id=spinners.cgroup_id("mine"), per_cpu=True) as runq:
        assert runq.form == form
        delta, run_delay = measured_window(runq, spinners, ["mine"])
        assert runq.lost == 0
    assert_agrees(delta.total.sum_ns, run_delay["mine"])
    assert delta.total.count == sum(delta.total.slots)
    # every wait of a task pinned to CPU ended on that CPU
    assert delta.by_cpu[CPU].count == delta.total.count > 0


def test_per_cgroup_histograms_agree_with_each_cgroups_run_delay(spinners: Spinners, form: str) -> None:
    spinners.start("two", 2, "rq-two")
    spinners.start("one", 1, "rq-one")
    with RunqueueLatency(per_cgroup=True) as runq:
        delta, run_delay = measured_window(runq, spinners, ["two", "one"])
        assert runq.lost == 0
        paths = {runq.cgroup_path(spinners.cgroup_id(group)) for group in ("two", "one")}
    for group in ("two", "one"):
        assert_agrees(delta.by_cgroup[spinners.cgroup_id(group)].sum_ns, run_delay[group])
    assert paths == {f"/{spinners.cgroups[group].name}" for group in ("two", "one")}


def test_pid_and_comm_filters_time_only_their_tasks(spinners: Spinners, form: str) -> None:
    (chosen, _) = spinners.start("pid", 2, "rq-pid")
    spinners.start("comm", 2, "rq-comm")
    with RunqueueLatency(pid=chosen) as by_pid, RunqueueLatency(comm="rq-comm") as by_comm:
        before = (_schedstat(chosen)[1], spinners.run_delay("comm"))
        first = (by_pid.snapshot(), by_comm.snapshot())
        spinners.go()
        time.sleep(WINDOW)
        spinners.stop()
        after = (_schedstat(chosen)[1], spinners.run_delay("comm"))
        pid_waits, comm_waits = by_pid.snapshot() - first[0], by_comm.snapshot() - first[1]
    assert_agrees(pid_waits.total.sum_ns, after[0] - before[0])
    assert_agrees(comm_waits.total.sum_ns, after[1] - before[1])


def test_units_divide_in_the_kernel(spinners: Spinners) -> None:
    from bpfscope.output.histogram import Unit

    spinners.start("unit", 2, "rq-unit")
    with RunqueueLatency(cgroup_id=spinners.cgroup_id("unit"), unit=Unit.MSECS) as runq:
        spinners.go()
        time.sleep(0.5)
        waits = runq.snapshot().total
    assert waits.count and waits.unit is Unit.MSECS
    # a busy peer's slice is milliseconds long: the waits fall in the first slots of a histogram in ms
    last = max(i for i, n in enumerate(waits.slots) if n)
    assert last < 10 and waits.histogram.unit == "msecs"
    assert waits.sum_ns / waits.count > 1e5


def test_metrics_label_cpus_and_at_most_twenty_cgroups(spinners: Spinners) -> None:
    spinners.start("metrics", 2, "rq-metrics")
    with RunqueueLatency(per_cgroup=True) as runq:
        spinners.go()
        time.sleep(0.5)
        families = {family.name: family for family in runq.metrics()}
    cpus = {s.labels["cpu"] for s in families["bpfscope_runqueue_latency_seconds"].samples}
    assert cpus == {str(cpu) for cpu in range(len(cpus))} and str(CPU) in cpus
    cgroups = {s.labels["cgroup"] for s in families["bpfscope_runqueue_latency_by_cgroup_seconds"].samples}
    assert "other" in cgroups and len(cgroups) <= 21
    assert f"/{spinners.cgroups['metrics'].name}" in cgroups
    labels = {key for family in families.values() for sample in family.samples for key in sample.labels}
    assert not {"pod", "container", "namespace"} & labels  # the names Kubernetes' scrapes add


# --- the command --------------------------------------------------------------------------------


def start(*args: str) -> subprocess.Popen[str]:
    return start_json("runqlat", "Tracing run queue latency", *args)


stop = stop_json


def test_cli_json_total_wait_agrees_with_run_delay(spinners: Spinners) -> None:
    spinners.start("cli", 3, "rq-cli")
    cgroup = spinners.cgroups["cli"]
    proc = start("--cgroup", str(cgroup), "--per-cpu", "--per-cgroup", "--interval", "0.5")
    before = spinners.run_delay("cli")
    time.sleep(0.2)  # the runner's first reading follows its banner: none of them waits before SIGCONT
    spinners.go()
    time.sleep(WINDOW)
    spinners.stop()
    waited = spinners.run_delay("cli") - before
    records, final, err = stop(proc)
    assert_agrees(final["sum_ns"], waited)
    assert (final["lost"], final["lost_waits"]) == (0, 0) and final["missed"] >= 0
    assert final["count"] == sum(b["count"] for b in final["buckets"]) > 0
    (on_cpu,) = [c for c in final["cpus"] if c["count"]]
    assert on_cpu["cpu"] == CPU and on_cpu["sum_ns"] == final["sum_ns"]
    (group,) = final["cgroups"]
    assert (group["cgroup"], group["cgroup_id"], group["sum_ns"]) == (f"/{cgroup.name}", cgroup.stat().st_ino,
                                                                       final["sum_ns"])
    assert records and all("final" not in r and r["unit"] == "usecs" for r in records)
    assert sum(r["count"] for r in records) <= final["count"]
    assert err.strip().splitlines()[-1].startswith(f"runqlat ({final['form']}): {final['count']:,} waits timed, ")


def test_cli_text_prints_bcc_histograms_per_cpu(spinners: Spinners) -> None:
    spinners.start("text", 2, "rq-text")
    spinners.go()
    result = subprocess.run([*BPFSCOPE, "runqlat", "--cgroup", str(spinners.cgroups["text"]), "--per-cpu",
                             "--unit", "ms", "--duration", "1"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Tracing run queue latency (") and lines[0].endswith("... Hit Ctrl-C to end.")
    assert f"cpu = {CPU}" in lines and "     msecs               : count     distribution" in lines
    assert lines[-1].startswith("runqlat (") and ", 0 lost in " in lines[-1]


def test_live_table_on_a_terminal(spinners: Spinners, on_a_tty: Callable[..., tuple[int, str]]) -> None:
    spinners.start("live", 2, "rq-live")
    spinners.go()
    status, screen = on_a_tty([*BPFSCOPE, "runqlat", "--per-cpu", "--duration", "2.5"],
                              ready="bpfscope runqlat", then=lambda: None)
    assert status == 0, screen
    for column in ("waited", "waits/s", "average", "p50", "p99"):
        assert column in screen
    assert f"cpu = {CPU}" in screen and "runqlat (" in screen


def test_kill_9_leaves_nothing_attached(spinners: Spinners) -> None:
    proc = start()
    its_programs = held_by(proc.pid)
    assert {name for id, name in loaded().items() if id in its_programs} <= set(PROGRAMS) and its_programs
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert not still_loaded(its_programs)  # the kernel frees programs once their last fd is gone


# --- bad input ----------------------------------------------------------------------------------


def bad(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*BPFSCOPE, "runqlat", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("bpfscope runqlat: ")
    assert result.stdout == ""
    return result


def test_unknown_pid_is_one_line_and_nothing_attached() -> None:
    before = unheld(PROGRAMS)
    result = bad("--pid", "999999999", "--duration", "1")
    assert result.returncode == 1 and "no process with pid 999999999" in result.stderr
    assert not left_behind(PROGRAMS, before)


@pytest.mark.parametrize("args, message", [
    (["--pid", "0"], "must be greater than 0"),
    (["--comm", "a-name-longer-than-15"], "1 to 15 bytes"),
    (["--cgroup", "/nonexistent/cg"], "no such directory"),
    (["--cgroup", "/tmp"], "not a cgroup v2 directory"),
    (["--unit", "s"], "invalid choice"),
    (["--duration", "0"], "must be greater than 0"),
    (["--interval", "-1"], "must be greater than 0"),
])
def test_bad_values_exit_2(args: list[str], message: str) -> None:
    result = bad(*args)
    assert result.returncode == 2 and message in result.stderr
