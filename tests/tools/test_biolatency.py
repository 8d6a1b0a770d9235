"""bpfscope biolatency end to end, against the kernel's own count: O_DIRECT reads and writes of 4 KiB on
a loop device the test makes (a file in /tmp) reach the device one request each, and the requests the
tool counts per operation equal the device's /proc/diskstats delta (reads completed, writes completed)
exactly. Both counts are read while the device is idle (nothing in flight, and the same before and
after the tool's reading), so they cover the same requests. Each loop device is detached after its test.

Both forms of the programs are tried: tp_btf where the kernel has it, and the tracepoint form (as if the
probe had said no); and both with the device's scheduler none (requests go to the driver without
a queue: no queue time) and mq-deadline (every request is inserted: a queue time each)."""

from __future__ import annotations

import mmap
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
from loaded import held_by, loaded, still_loaded
from streams import start_json, stop_json

from bpfscope.features import Feature
from bpfscope.testing.plugin import skip_unless_kernel_has
from bpfscope.tools.biolatency import BlockLatency, IoSnapshot, disk_named

BPFSCOPE = [sys.executable, "-m", "bpfscope.cli.main"]
PROGRAMS = ("insert_btf", "issue_btf", "complete_btf", "insert_tp", "issue_tp", "complete_tp")
BLOCK = 4096
READS, WRITES = 500, 300


@dataclass(frozen=True)
class Counts:
    """A disk's line of /proc/diskstats, as far as the test reads it."""

    reads: int
    writes: int
    in_flight: int
    discards: int
    flushes: int

    def __sub__(self, earlier: Counts) -> dict[str, int]:
        return {"read": self.reads - earlier.reads, "write": self.writes - earlier.writes,
                "discard": self.discards - earlier.discards, "flush": self.flushes - earlier.flushes}


def diskstats(name: str) -> Counts:
    for line in Path("/proc/diskstats").read_text().splitlines():
        fields = line.split()
        if fields[2] == name:
            # reads completed (4th), writes completed (8th), in flight (12th), discards (15th), flushes (19th)
            numbers = [int(f) for f in fields[3:]] + [0] * 8  # older kernels have fewer fields
            return Counts(numbers[0], numbers[4], numbers[8], numbers[11], numbers[15])
    raise AssertionError(f"{name} is not in /proc/diskstats")


class Loop:
    """A loop device on a file of its own in /tmp; detached by close()."""

    def __init__(self, directory: Path, *, size: int = 64 << 20, partitioned: bool = False) -> None:
        self.backing = directory / f"loop-{os.getpid()}-{time.monotonic_ns()}.img"
        with open(self.backing, "wb") as f:
            f.truncate(size)
        args = ["losetup", "--find", "--show", *(["--partscan"] if partitioned else []), str(self.backing)]
        self.path = subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()
        self.name = os.path.basename(self.path)
        if partitioned:  # added through BLKPG, which needs no partition table parser in the kernel
            subprocess.run(["addpart", self.path, "1", "2048", str(size // 512 - 2048)], check=True)

    def set_scheduler(self, scheduler: str) -> None:
        queue = Path(f"/sys/block/{self.name}/queue")
        if f"{scheduler}" not in queue.joinpath("scheduler").read_text().replace("[", " ").replace("]", " ").split():
            pytest.skip(f"no {scheduler} I/O scheduler in this kernel")
        queue.joinpath("scheduler").write_text(scheduler)
        if queue.joinpath("iostats").read_text().strip() != "1":
            queue.joinpath("iostats").write_text("1")  # /proc/diskstats counts only with it

    def idle(self) -> Counts:
        """The device's counts once nothing is in flight and nothing moves for 50 ms (udev may probe a
        new device)."""
        deadline = time.monotonic() + 10
        while True:
            first = diskstats(self.name)
            time.sleep(0.05)
            if first == diskstats(self.name) and not first.in_flight:
                return first
            assert time.monotonic() < deadline, f"{self.name} did not settle: {first}"

    def direct_io(self, reads: int, writes: int) -> None:
        """`writes` then `reads` O_DIRECT requests of one block each, at distinct offsets."""
        buffer = mmap.mmap(-1, BLOCK)  # page-aligned, as O_DIRECT needs
        buffer.write(b"bpfscope" * (BLOCK // 8))
        fd = os.open(self.path, os.O_RDWR | os.O_DIRECT)
        try:
            for i in range(writes):
                assert os.pwrite(fd, buffer, i * BLOCK) == BLOCK
            for i in range(reads):
                assert os.preadv(fd, [buffer], (i * 7 % 4096) * BLOCK) == BLOCK
        finally:
            os.close(fd)
            buffer.close()

    def close(self) -> None:
        subprocess.run(["losetup", "--detach", self.path], check=True)
        self.backing.unlink()


@pytest.fixture
def loops() -> Iterator[Callable[..., Loop]]:
    made: list[Loop] = []

    def make(**kwargs: Any) -> Loop:
        loop = Loop(Path("/tmp"), **kwargs)
        made.append(loop)
        return loop

    try:
        yield make
    finally:
        for loop in made:
            loop.close()


@pytest.fixture(params=["tp_btf", "tracepoint"])
def form(request: pytest.FixtureRequest, pretend_missing: Callable[..., None]) -> str:
    """Each form of the programs: tp_btf (Linux 5.11+), skipped where this kernel refuses it, and the
    tracepoint form every kernel can load, tried here as if the probe had said no."""
    if request.param == "tp_btf":
        skip_unless_kernel_has(Feature.TP_BTF)
    else:
        pretend_missing(Feature.TP_BTF)
    return str(request.param)


def measured(bio: BlockLatency, loop: Loop, reads: int, writes: int) -> tuple[IoSnapshot, dict[str, int]]:
    """The tool's histograms and the device's diskstats delta over the same requests."""
    before = loop.idle()
    first = bio.snapshot()
    assert loop.idle() == before
    loop.direct_io(reads, writes)
    after = loop.idle()
    delta = bio.snapshot() - first
    assert loop.idle() == after
    return delta, after - before


# --- the library --------------------------------------------------------------------------------


@pytest.mark.parametrize("scheduler", ["none", "mq-deadline"])
def test_completed_requests_equal_diskstats(loops: Callable[..., Loop], form: str, scheduler: str) -> None:
    loop = loops()
    loop.set_scheduler(scheduler)
    disk = disk_named(loop.name)
    with BlockLatency(disk=disk) as bio:
        assert bio.form == form
        delta, kernel = measured(bio, loop, READS, WRITES)
        assert bio.lost == 0
    completed = delta.completed(disk.dev)
    assert kernel["read"] >= READS and kernel["write"] >= WRITES  # O_DIRECT: a request each, at least
    assert {op: completed.get(op, 0) for op in ("read", "write", "flush", "discard")} == kernel
    assert {dev for dev, _ in delta.times} == {disk.dev}  # the disk filter
    for op in ("read", "write"):
        times = delta.times[(disk.dev, op)]
        assert times.device.count == sum(times.device.slots) and times.device.sum_ns > 0
        if scheduler == "none":
            assert times.queue.count == 0  # straight to the driver: never inserted
        else:
            assert times.queue.count == times.device.count  # through the scheduler: each inserted


def test_every_disk_is_kept_apart(loops: Callable[..., Loop], form: str) -> None:
    first, second = loops(), loops()
    with BlockLatency() as bio:
        before = (first.idle(), second.idle())
        start = bio.snapshot()
        first.direct_io(40, 20)
        second.direct_io(10, 30)
        after = (first.idle(), second.idle())
        delta = bio.snapshot() - start
    for loop, was, now in zip((first, second), before, after):
        completed = delta.completed(disk_named(loop.name).dev)
        assert {op: completed.get(op, 0) for op in ("read", "write", "flush", "discard")} == now - was


def test_metrics_by_disk_and_operation(loops: Callable[..., Loop]) -> None:
    loop = loops()
    with BlockLatency() as bio:
        loop.direct_io(20, 10)
        loop.idle()
        families = {family.name: family for family in bio.metrics()}
    for name in ("bpfscope_block_io_device_seconds", "bpfscope_block_io_queue_seconds"):
        samples = families[name].samples
        counts = {s.labels["op"]: s.value for s in samples
                  if s.labels["disk"] == loop.name and s.name.endswith("_count")}
        if name.endswith("device_seconds"):
            assert counts["read"] >= 20 and counts["write"] >= 10
        assert {key for s in samples for key in s.labels} == {"disk", "op", "le"}
        assert len({s.labels["disk"] for s in samples}) <= 33  # 32 disks by name, then "other"


# --- the command --------------------------------------------------------------------------------


def start(*args: str) -> subprocess.Popen[str]:
    return start_json("biolatency", "Tracing block device I/O", *args)


stop = stop_json


def test_cli_json_counts_equal_diskstats(loops: Callable[..., Loop]) -> None:
    loop = loops()
    proc = start("--disk", loop.path, "--interval", "0.5")
    time.sleep(0.2)  # the runner's first reading follows its banner
    before = loop.idle()
    loop.direct_io(READS, WRITES)
    kernel = loop.idle() - before
    time.sleep(0.6)  # an interval's record too
    records, final, err = stop(proc)
    completed = {row["op"]: row["device"]["count"] for row in final["disks"]}
    assert {row["disk"] for row in final["disks"]} == {loop.name}
    assert {op: completed.get(op, 0) for op in ("read", "write", "flush", "discard")} == kernel
    assert final["requests"] == sum(completed.values()) and (final["lost"], final["lost_requests"]) == (0, 0)
    assert final["missed"] >= 0 and final["unit"] == "usecs"
    for row in final["disks"]:
        assert row["dev"] == disk_named(loop.name).numbers
        assert row["device"]["count"] == sum(bucket["count"] for bucket in row["device"]["buckets"])
    assert records and all("final" not in r for r in records)
    assert err.strip().splitlines()[-1].startswith(
        f"biolatency ({final['form']}): {final['requests']:,} requests completed on 1 disk, 0 lost")


def test_cli_text_prints_histograms_per_disk_and_operation(loops: Callable[..., Loop]) -> None:
    loop = loops()
    loop.set_scheduler("mq-deadline")
    proc = subprocess.Popen([*BPFSCOPE, "biolatency", "--disk", loop.name, "--duration", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().startswith(f"Tracing block device I/O on {loop.name}")
    loop.direct_io(30, 20)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert any(line.startswith(f"disk = {loop.name}, op = read: ") for line in lines)
    assert any(line.startswith(f"disk = {loop.name}, op = write: ") for line in lines)
    assert "  device time:" in lines and "  queue time:" in lines
    assert "     usecs               : count     distribution" in lines
    assert lines[-1].startswith("biolatency (") and ", 0 lost in " in lines[-1]


def test_live_table_on_a_terminal(loops: Callable[..., Loop], on_a_tty: Callable[..., tuple[int, str]]) -> None:
    loop = loops()
    status, screen = on_a_tty([*BPFSCOPE, "biolatency", "--disk", loop.name, "--duration", "2.5"],
                              ready="bpfscope biolatency", then=lambda: loop.direct_io(20, 20))
    assert status == 0, screen
    for column in ("disk", "requests", "device avg", "queue avg"):
        assert column in screen
    assert f"disk = {loop.name}, op = read" in screen


def test_kill_9_leaves_nothing_attached() -> None:
    proc = start()
    its_programs = held_by(proc.pid)
    assert its_programs and {name for id, name in loaded().items() if id in its_programs} <= set(PROGRAMS)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert not still_loaded(its_programs)  # the kernel frees programs once their last fd is gone


# --- bad input ----------------------------------------------------------------------------------


def bad(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*BPFSCOPE, "biolatency", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("bpfscope biolatency: ")
    assert result.stdout == ""
    return result


def test_a_partition_names_its_disk(loops: Callable[..., Loop]) -> None:
    loop = loops(partitioned=True)
    deadline = time.monotonic() + 10
    while not os.path.exists(f"/sys/class/block/{loop.name}p1"):
        assert time.monotonic() < deadline, f"{loop.name}p1 did not appear"
        time.sleep(0.05)
    result = bad("--disk", f"{loop.name}p1", "--duration", "1")
    assert result.returncode == 2
    assert f"{loop.name}p1 is a partition of {loop.name}" in result.stderr and f"give {loop.name}" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--disk", "nosuchdisk0"], "'nosuchdisk0' is not a block device (disks: "),
    (["--disk", "/dev/null"], "is not a block device"),
    (["--unit", "s"], "invalid choice"),
    (["--duration", "0"], "must be greater than 0"),
    (["--interval", "-1"], "must be greater than 0"),
])
def test_bad_values_exit_2(args: list[str], message: str) -> None:
    result = bad(*args)
    assert result.returncode == 2 and message in result.stderr
