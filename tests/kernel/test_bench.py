"""`bpfscope bench`: each benchmark runs on this kernel at a small size and returns sane figures. No
timing asserts: how fast a machine is is a measurement, not a test result."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bpfscope.benchmarks import Figure, report

pytestmark = pytest.mark.kernel

SRC = Path(__file__).resolve().parents[2] / "src"


def check(figures: list[Figure], benchmark: str, *, differences: tuple[str, ...] = ()) -> None:
    """Every figure names its benchmark and is finite; all but differences (`ours - empty`, which
    noise can take below zero at small sizes) are positive, and so are their references."""
    assert figures
    for figure in figures:
        assert figure.benchmark == benchmark
        assert math.isfinite(figure.value), figure
        if figure.name not in differences:
            assert figure.value > 0, figure
        if figure.reference is not None:
            assert figure.reference_value is not None and math.isfinite(figure.reference_value), figure
            if figure.name not in differences:
                assert figure.reference_value > 0, figure
        json.dumps(figure.as_dict())


def test_maps() -> None:
    from bpfscope.benchmarks import maps

    figures = maps.run(entries=2_000, runs=2)
    check(figures, "maps")
    names = [f.name for f in figures]
    assert "batch read, 2,000 entries" in names
    assert all(f.target is None for f in figures)  # the 30 ms target is for 100,000 entries only
    batch = figures[names.index("batch read, 2,000 entries")]
    assert batch.spread is not None and batch.reference_spread is not None  # both sides over rounds


def test_xdp() -> None:
    from bpfscope.benchmarks import xdp

    figures = xdp.run(repeat=20_000, runs=1)
    check(figures, "xdp", differences=("packets counter: overhead over empty",))
    overhead = next(f for f in figures if f.name == "packets counter: overhead over empty")
    assert overhead.target == 3.0 and overhead.unit == "ns/packet"
    assert overhead.spread is not None and overhead.reference_spread is not None
    if len(os.sched_getaffinity(0)) >= 2:
        assert any("2 threads" in f.name for f in figures)


def test_xdp_frame_is_64_byte_udp() -> None:
    from bpfscope.benchmarks.xdp import udp_frame

    frame = udp_frame()
    assert len(frame) == 64
    assert frame[12:14] == b"\x08\x00" and frame[23] == 17  # IPv4, then UDP


def test_startup() -> None:
    from bpfscope.benchmarks import startup

    with startup.XdpWatch(startup.IFACE) as watch:
        if watch.prog_id():
            pytest.skip(f"{startup.IFACE} already runs an XDP program")
    figures = startup.run(runs=1, duration=0.2)
    check(figures, "startup")
    assert {f.unit for f in figures} == {"ms", "MiB"}
    assert all(f.spread is not None and f.reference_spread is not None for f in figures)
    with startup.XdpWatch(startup.IFACE) as watch:
        assert watch.prog_id() == 0  # the tool's link went with its process


def test_ringbuf() -> None:
    from bpfscope.benchmarks import ringbuf

    figures = ringbuf.run(events=20_000, rounds=2, load_seconds=0.2, load_rounds=2)
    check(figures, "ringbuf")
    targeted = [f for f in figures if f.target is not None]
    assert len(targeted) == 5
    # The median over rounds with its range, ours and the C reader's alike: no best-of-N
    assert all(f.spread is not None for f in targeted)
    drain = next(f for f in figures if f.name == "batch reader drain()")
    if drain.reference is not None:
        assert drain.reference_spread is not None
        assert drain.spread is not None and drain.spread[0] <= drain.value <= drain.spread[1]


def test_guard() -> None:
    import shutil

    from bpfscope.testing.netns import own_leftovers

    if shutil.which("nft") is None:
        pytest.skip("nft is not installed")
    from bpfscope.benchmarks import guard

    # A low limit, so that even a flood slowed down by a busy machine goes over it.
    figures = guard.run(seconds=0.2, rounds=1, warmup=0, repeat=50_000, listed=1_000, rate=100, burst=10)
    # 100,000 sources in 0.2 s: a source may send no more than its burst, so nothing need be dropped.
    shares = tuple(f.name for f in figures if f.unit == "%")
    check(figures, "guard", differences=shares)
    names = [f.name for f in figures]
    assert any(n.startswith("guard (XDP ") and n.endswith("cost per dropped packet") for n in names)
    assert any(n.startswith("guard, 1,000 deny + 1,000 allow prefixes") for n in names)
    assert any(n.startswith("guard, 100,000 sources") for n in names)
    assert sum(f.target == guard.TARGET for f in figures) == 4  # vs meter and vs plain drop, cost and rate
    assert all(f.spread is not None and (f.reference is None) == (f.reference_spread is None) for f in figures)
    flood = next(f for f in figures if f.name.startswith("flood sent: "))
    assert flood.name == f"flood sent: {guard.flood_method().value}"  # the probe decided
    assert "passed + dropped = rx_packets" in flood.note  # guard's counts held against the veth's (else it raises)
    assert not own_leftovers()
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    assert "bpfscope_bench_guard" not in tables


def test_opensnoop() -> None:
    import shutil

    from bpfscope.benchmarks import opensnoop

    if not (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")):
        pytest.skip("no C compiler to build the openat loop")
    figures = opensnoop.run(opens=2_000, rounds=1, repeats=2)
    added = tuple(f.name for f in figures if f.name.endswith("added per open"))
    check(figures, "opensnoop", differences=added)
    by_name = {f.name: f for f in figures}
    assert by_name["bpfscope opensnoop (streaming): traced ÷ untraced"].target == opensnoop.STREAM_TARGET
    assert by_name["bpfscope opensnoop --count: traced ÷ untraced"].target == opensnoop.COUNT_TARGET
    assert "received 4,000 of 4,000 opens" in by_name["bpfscope opensnoop --count: traced ÷ untraced"].note
    for figure in by_name.values():
        if figure.name.startswith("bpfscope") and figure.reference is not None:
            # like-for-like: bpftrace on the one hook bpfscope's opensnoop uses, the same statistic
            assert figure.reference.startswith("bpftrace") and "sys_exit_openat" in figure.reference
            assert figure.reference_spread is not None
    if shutil.which("bpftrace"):
        count = by_name["bpfscope opensnoop --count: traced ÷ untraced"]
        assert count.reference == "bpftrace count() on sys_exit_openat (like-for-like)"
        printf = "bpftrace printf on sys_exit_openat (like-for-like): traced ÷ untraced"
        if printf in by_name:  # x86-64: where the saved registers are is known
            # it read the path at exit (its lines name /dev/null); a busy machine may lose some
            assert "received 0 of" not in by_name[printf].note
        typed = by_name["bpftrace count() on sys_enter_openat (as users type it): traced ÷ untraced"]
        assert typed.reference == count.reference
    shown = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True).stdout
    assert not any(p.get("name") in ("exit_openat", "enter_openat") for p in json.loads(shown))


def test_agent() -> None:
    import glob
    import shutil

    from bpfscope.benchmarks import agent
    from bpfscope.testing.netns import own_leftovers

    if not (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")):
        pytest.skip("no C compiler to build the openat loop")
    figures = agent.run(idle=2, load=2, settle=0.5, bare=1, windows=1)
    # CPU over a second or two is a few 10 ms ticks: zero, or below the idle rate, is possible
    cpu = tuple(f.name for f in figures if f.unit in ("% of a core", "ms", "µs/request") and "scrape of" not in f.name)
    check(figures, "agent", differences=cpu)
    by_name = {f.name: f for f in figures}
    assert by_name["idle: agent CPU, scraped every 1 s"].target == agent.CPU_TARGET
    assert by_name["idle: agent RSS (VmRSS)"].target == agent.RSS_TARGET
    assert "the agent counted 0 " not in by_name["load: execs of /bin/true"].note
    assert not own_leftovers()
    assert not glob.glob(agent.PIN_PREFIX + "*")


def test_table_puts_target_and_reference_side_by_side() -> None:
    figures = [
        Figure("maps", "batch read", 12.5, "ms", False, target=30.0, reference="per-key read",
               reference_value=1250.0, note="median of 5", spread=(12.0, 13.5), reference_spread=(1200.0, 1300.0)),
        Figure("maps", "batch write", 40.0, "ms", False),
    ]
    lines = report.table("maps", figures).splitlines()
    assert lines[0] == "maps"
    row = lines[2]
    for cell in ("batch read [1]", "12.5 ms (12.0–13.5)", "≤ 30.0 ms", "✓", "per-key read", "1,250 ms (1,200–1,300)",
                 "0.01×"):
        assert cell in row
    assert lines[-1] == "  [1] median of 5"
    assert [json.loads(line)["met"] for line in report.json_lines(figures).splitlines()] == [True, None]


@pytest.mark.slow
def test_cli_json_lines(tmp_path: Path) -> None:
    path = os.pathsep.join(filter(None, (str(SRC), os.environ.get("PYTHONPATH"))))
    env = {**os.environ, "PYTHONPATH": path}
    saved = tmp_path / "bench"
    done = subprocess.run([sys.executable, "-m", "bpfscope.cli.main", "bench", "maps", "--json", "--save", str(saved)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "running maps…" in done.stderr
    figures = [json.loads(line) for line in done.stdout.splitlines()]
    assert figures and all(f["benchmark"] == "maps" for f in figures)
    batch = next(f for f in figures if f["name"] == "batch read, 100,000 entries")
    assert batch["target"] == 30.0 and batch["unit"] == "ms" and batch["met"] in (True, False)
    assert batch["reference"].startswith("per-key read") and batch["ratio"] > 0
    # --save: the same figures, after a line naming the machine and the command
    header, figures_saved = report.load(saved / "maps.jsonl")
    assert [json.loads(json.dumps(f.as_dict())) for f in figures_saved] == figures
    assert header["command"] == f"bpfscope bench maps --json --save {saved}"
    assert header["kernel"] == os.uname().release and header["libbpf"].count(".") == 1
