"""Every example under examples/ runs on the real kernel, from a fresh `bpfscope gen` in a copy of its
folder, against a workload whose result is known; the checked-in generated modules are not stale."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from bpfscope.testing import packets as pk

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HOOKS = ("xdp", "tc", "tracepoint", "uprobe", "ringbuf", "percpu", "perf_event")
BPFSCOPE = [sys.executable, "-m", "bpfscope.cli.main"]


def program_of(hook: str) -> Path:
    (source,) = (EXAMPLES / hook).glob("*.bpf.c")
    return source


@pytest.mark.parametrize("hook", HOOKS)
def test_the_checked_in_module_is_generated_from_the_program(hook):
    result = subprocess.run([*BPFSCOPE, "gen", "--check", str(program_of(hook))], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def example(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A copy of examples/<hook> with its module generated afresh (object included)."""
    hook = request.param
    folder = tmp_path / hook
    shutil.copytree(EXAMPLES / hook, folder, ignore=shutil.ignore_patterns("*.bpf.o", "*.py", "*.pyi"))
    shutil.copy(EXAMPLES / hook / "main.py", folder / "main.py")
    subprocess.run([*BPFSCOPE, "gen", str(program_of(hook).name)], cwd=folder, check=True, capture_output=True,
                   timeout=120)
    yield folder


class Run:
    """`python main.py --json ...` in the example's folder; `wait_ready()` once it has attached."""

    def __init__(self, folder: Path, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "main.py", "--json", *args], cwd=folder,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_ready(self) -> None:
        line = self.proc.stderr.readline() if self.proc.stderr else ""
        assert line, f"the example exited before attaching: {self.proc.communicate()}"

    def results(self) -> list[dict[str, Any]]:
        out, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err
        return [json.loads(line) for line in out.splitlines()]


class Workload:
    """A Python process started before the example, so that only its `work` falls inside the example's window
    (a Python's start, slow on a busy machine, does not): it runs `setup`, says it is ready, and does `work`
    once told to go."""

    def __init__(self, work: str, *, setup: str = "", popen: Callable[..., subprocess.Popen[str]] = subprocess.Popen):
        code = f"import sys\n{setup}\nprint('ready', flush=True)\nsys.stdin.readline()\n{work}"
        self.proc = popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
        ready = self.proc.stdout.readline() if self.proc.stdout else ""
        assert ready == "ready\n", f"the workload did not start: {self.proc.communicate()}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def go(self) -> str:
        """Its work, to the end; what it printed."""
        out, err = self.proc.communicate("go\n", timeout=60)
        assert self.proc.returncode == 0, err
        return out


@pytest.mark.parametrize("example", ["xdp"], indirect=True)
def test_xdp_counts_each_source(example, veth_pair):
    frame = pk.udp_frame(src_mac=veth_pair.peer_mac, dst_mac=veth_pair.host_mac, src_ip=veth_pair.peer_ip,
                         dst_ip=veth_pair.host_ip, sport=40000, dport=9, payload=b"x" * 18)
    sender = Workload(f"assert send_frames([{frame!r}] * 40, {veth_pair.peer!r}) == 40",
                      setup="from bpfscope.testing.netns import send_frames", popen=veth_pair.popen)
    run = Run(example, "--iface", veth_pair.host, "--seconds", "2")
    run.wait_ready()
    sender.go()
    assert {"source": veth_pair.peer_ip, "packets": 40, "bytes": 40 * len(frame)} in run.results()


@pytest.mark.parametrize("example", ["tc"], indirect=True)
def test_tc_counts_bytes_per_destination_port(example, veth_pair):
    run = Run(example, "--iface", veth_pair.host, "--seconds", "2")
    run.wait_ready()
    veth_pair.send_udp(count=25, dport=7777, payload=b"y" * 10)
    frame = pk.udp_frame(src_mac=veth_pair.host_mac, dst_mac=veth_pair.peer_mac, src_ip=veth_pair.host_ip,
                         dst_ip=veth_pair.peer_ip, sport=40000, dport=7777, payload=b"y" * 10)
    assert {"port": 7777, "bytes": 25 * len(frame)} in run.results()


@pytest.mark.parametrize("example", ["tracepoint"], indirect=True)
def test_tracepoint_counts_opens_of_one_process(example, tmp_path):
    opener = Workload(f"for _ in range(17): open({str(tmp_path / 'f')!r}, 'w').close()")
    run = Run(example, "--pid", str(opener.pid), "--seconds", "2")
    run.wait_ready()
    opener.go()
    results = run.results()
    assert len(results) == 1, results  # the pid filter, in the kernel: that process's name alone
    assert results[0]["opens"] >= 17  # its 17, and whatever else its interpreter opened


@pytest.mark.parametrize("example", ["uprobe"], indirect=True)
def test_uprobe_histogram_of_malloc_sizes(example):
    # Python's own allocator takes small requests; blocks over 512 bytes go to malloc.
    target = Workload("keep = [bytearray(5000) for _ in range(300)]")
    run = Run(example, "--pid", str(target.pid), "--seconds", "2")
    run.wait_ready()
    target.go()
    counts = {(r["low"], r["high"]): r["count"] for r in run.results()}
    assert counts.get((4096, 8191), 0) >= 300


@pytest.mark.parametrize("example", ["ringbuf"], indirect=True)
def test_ringbuf_streams_each_exec(example):
    run = Run(example, "--seconds", "2")
    run.wait_ready()
    spawned = [subprocess.Popen(["/bin/true"]) for _ in range(5)]
    for p in spawned:
        p.wait()
    seen = {r["pid"]: r["comm"] for r in run.results()}
    assert all(seen.get(p.pid) == "true" for p in spawned), seen


@pytest.mark.parametrize("example", ["percpu"], indirect=True)
def test_percpu_counts_on_every_cpu(example):
    calls = 20_000
    caller = Workload(f"for _ in range({calls}): os.getppid()", setup="import os")
    run = Run(example, "--seconds", "2")
    run.wait_ready()
    caller.go()
    (result,) = run.results()
    with open("/sys/devices/system/cpu/possible") as f:
        possible = int(f.read().strip().split("-")[-1]) + 1
    assert len(result["per_cpu"]) == possible
    assert sum(result["per_cpu"]) >= calls  # those getppid() calls, on whichever CPU, and the machine's own


@pytest.mark.parametrize("example", ["perf_event"], indirect=True)
def test_perf_event_samples_a_busy_process(example):
    frequency, seconds = 199, 5
    # Spins for a second under a name no other process has. On a busy machine it is not on a CPU all that
    # second: it prints its CPU time, and the time it was the task running on a CPU (the second less its wait
    # on a run queue), which holds its CPU time and what interrupts and the hypervisor took while it ran.
    spinner = Workload("cpu, waited, start = time.process_time(), run_delay(), time.monotonic()\n"
                       "while time.monotonic() < start + 1: pass\n"
                       "print(time.process_time() - cpu, time.monotonic() - start - (run_delay() - waited))",
                       setup="import time\nwith open('/proc/self/comm', 'w') as f: f.write('bpfscope-spin')\n"
                             "def run_delay(): return int(open('/proc/self/schedstat').read().split()[1]) / 1e9")
    start = time.monotonic()
    run = Run(example, "--seconds", str(seconds), "--frequency", str(frequency))
    run.wait_ready()
    on_cpu, running = map(float, spinner.go().split())
    # The example samples from before it is ready until `seconds` after it said so, later than `start`.
    assert time.monotonic() - start < seconds, "the machine is too busy: the spin may have ended after the sampling"
    samples = {r["comm"]: r["samples"] for r in run.results()}
    # A clock on each CPU samples what runs there: the spinner, on whichever CPU, gets its share of the ticks.
    spun = samples.get("bpfscope-spin", 0)
    assert 0.75 * frequency * on_cpu - 10 <= spun <= 1.25 * frequency * running + 10, (samples, on_cpu, running)
