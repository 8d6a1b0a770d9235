"""Every example under examples/ runs on the real kernel, from a fresh `bpfscope gen` in a copy of its
folder, against a workload whose result is known; the checked-in generated modules are not stale."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from bpfscope.testing import packets as pk
from bpfscope.testing.netns import VethPair

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


def send_udp_to_host(pair: VethPair, n: int) -> int:
    frame = pk.udp_frame(src_mac=pair.peer_mac, dst_mac=pair.host_mac, src_ip=pair.peer_ip, dst_ip=pair.host_ip,
                         sport=40000, dport=9, payload=b"x" * 18)
    code = ("from bpfscope.testing.netns import send_frames\n"
            f"assert send_frames([{frame!r}] * {n}, {pair.peer!r}) == {n}\n")
    pair.exec([sys.executable, "-c", code], check=True)
    return len(frame)


@pytest.mark.parametrize("example", ["xdp"], indirect=True)
def test_xdp_counts_each_source(example, veth_pair):
    run = Run(example, "--iface", veth_pair.host, "--seconds", "2")
    run.wait_ready()
    size = send_udp_to_host(veth_pair, 40)
    assert {"source": veth_pair.peer_ip, "packets": 40, "bytes": 40 * size} in run.results()


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
    opener = subprocess.Popen([sys.executable, "-c", f"import sys\nsys.stdin.readline()\n"
                               f"for _ in range(17): open({str(tmp_path / 'f')!r}, 'w').close()\n"],
                              stdin=subprocess.PIPE, text=True)
    run = Run(example, "--pid", str(opener.pid), "--seconds", "2")
    run.wait_ready()
    opener.communicate("go\n", timeout=30)
    results = run.results()
    assert len(results) == 1, results  # the pid filter, in the kernel: that process's name alone
    assert results[0]["opens"] >= 17  # its 17, and whatever else its interpreter opened


@pytest.mark.parametrize("example", ["uprobe"], indirect=True)
def test_uprobe_histogram_of_malloc_sizes(example):
    # Python's own allocator takes small requests; blocks over 512 bytes go to malloc.
    target = subprocess.Popen([sys.executable, "-c", "import sys\nsys.stdin.readline()\n"
                               "keep = [bytearray(5000) for _ in range(300)]\n"], stdin=subprocess.PIPE, text=True)
    run = Run(example, "--pid", str(target.pid), "--seconds", "2")
    run.wait_ready()
    target.communicate("go\n", timeout=30)
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
    run = Run(example, "--seconds", "2")
    run.wait_ready()
    calls = 20_000
    subprocess.run([sys.executable, "-c", f"import os\nfor _ in range({calls}): os.getppid()"], check=True)
    (result,) = run.results()
    with open("/sys/devices/system/cpu/possible") as f:
        possible = int(f.read().strip().split("-")[-1]) + 1
    assert len(result["per_cpu"]) == possible
    assert sum(result["per_cpu"]) >= calls  # those getppid() calls, on whichever CPU, and the machine's own


@pytest.mark.parametrize("example", ["perf_event"], indirect=True)
def test_perf_event_samples_a_busy_process(example):
    spin = "import time\nend = time.time() + 3\nwhile time.time() < end: pass\n"
    busy = subprocess.Popen([sys.executable, "-c", spin])
    try:
        run = Run(example, "--seconds", "1", "--frequency", "199")
        run.wait_ready()
        samples = {r["comm"]: r["samples"] for r in run.results()}
    finally:
        busy.kill()
        busy.wait()
    busiest = max(samples, key=lambda comm: samples[comm])
    assert "python" in busiest and samples[busiest] >= 100, samples  # ~199 a second while it spins
