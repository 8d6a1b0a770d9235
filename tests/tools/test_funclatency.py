"""bpfscope funclatency end to end: a small C program built here sleeps for known times inside
`work()` and recurses in `recurse()`; the kernel's histogram must count each call in its bucket.

Where the kernel skipped runs of its probes (`missed`), fewer calls may be counted: a skipped entry or return
of `work`, which does not recurse, loses that one call (per_run=1 in completeness.assert_counted); in a
recursion it also shifts the pairing of every level around it on the thread's stack, so up to `depth` calls are
lost or timed wrong."""

from __future__ import annotations

import heapq
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import pytest
from completeness import assert_counted
from loaded import held_by, left_behind, loaded, still_loaded, unheld

from bpfscope.errors import BpfscopeError
from bpfscope.output.histogram import Log2Histogram, bucket_of
from bpfscope.tools.funclatency import GO_REFUSAL, FunctionLatency, Unit, is_go_binary, parse_target

BPFSCOPE = [sys.executable, "-m", "bpfscope.cli.main"]
PROGRAMS = ("time_entry", "time_return")

WORKER_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long long now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void sleep_us(long us)
{
	struct timespec t = { us / 1000000, (us % 1000000) * 1000 };

	while (nanosleep(&t, &t))
		;
}

__attribute__((noinline)) int work(long us)
{
	sleep_us(us);
	return 0;
}

/* Each level sleeps, then calls the next: level d lasts (d levels) x us. Not a tail call. */
__attribute__((noinline)) long long recurse(int depth, long us)
{
	long long start = now_ns(), took;

	if (us)
		sleep_us(us);
	if (depth > 1)
		recurse(depth - 1, us);
	took = now_ns() - start;
	printf("recurse %d %lld\n", depth, took);
	return took;
}

/* worker [--wait] work:US:N | recurse:DEPTH:US ...; prints each call's own duration in ns. */
int main(int argc, char **argv)
{
	int i = 1;
	char line[16];

	if (argc > 1 && !strcmp(argv[1], "--wait")) {
		printf("ready\n");
		fflush(stdout);
		if (!fgets(line, sizeof(line), stdin))
			return 1;
		i = 2;
	}
	for (; i < argc; i++) {
		long a, b;

		if (sscanf(argv[i], "work:%ld:%ld", &a, &b) == 2) {
			for (long n = 0; n < b; n++) {
				long long start = now_ns();

				work(a);
				printf("work %lld\n", now_ns() - start);
			}
		} else if (sscanf(argv[i], "recurse:%ld:%ld", &a, &b) == 2) {
			recurse(a, b);
		} else {
			return 2;
		}
	}
	return 0;
}
"""

# Sleeps chosen well inside their log2 microsecond bucket, with room above for timer slack and a
# busy scheduler: 1,350 us in 1024-2047, 11 ms in 8192-16383, 22 ms in 16384-32767.
STEPS = ["work:1350:10", "work:11000:5", "work:22000:3"]
EXPECTED_US_BUCKETS = {10: 10, 13: 5, 14: 3}


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory, build_c: Callable[..., Path]) -> Path:
    return build_c(WORKER_C, tmp_path_factory.mktemp("funclatency"), "worker", "-O1", "-fno-inline",
                   "-fno-optimize-sibling-calls")


def run_worker(binary: Path, *steps: str) -> dict[str, list[int]]:
    """Runs the worker to its end; its own measurement of each call, in ns, by function."""
    out = subprocess.run([str(binary), *steps], capture_output=True, text=True, check=True, timeout=30).stdout
    measured: dict[str, list[int]] = {"work": [], "recurse": []}
    for line in out.splitlines():
        words = line.split()
        measured[words[0]].append(int(words[-1]))
    return measured


def buckets(durations_ns: list[int], unit_ns: int = 1000) -> dict[int, int]:
    return dict(Counter(bucket_of(d // unit_ns) for d in durations_ns))


def used(slots: tuple[int, ...]) -> dict[int, int]:
    return {i: n for i, n in enumerate(slots) if n}


def fits(kernel: dict[int, int], measured: list[int], slack_ns: int, unit_ns: int = 1000, *, spoiled: int = 0) -> bool:
    """Whether the kernel's buckets can be these calls', each timed by the kernel within slack_ns of the
    worker's own reading: shorter (slack_ns > 0) for `work`, timed around the call, longer (slack_ns < 0)
    for `recurse`, timed inside it. The slack is the difference of the sums, so no call's exceeds it; on
    a quick machine every call's bucket is fixed, and under emulation (a probe hit costs ~0.5 ms) a call
    near a bucket's edge may be in either. `spoiled`: calls that skipped probe runs may have taken out of
    the kernel's counts, or put in the wrong bucket."""
    ranges = sorted((sorted((bucket_of(max(m - slack_ns, 0) // unit_ns), bucket_of(m // unit_ns))) for m in measured),
                    key=lambda r: r[1])
    free = sorted(b for b, n in kernel.items() for _ in range(n))
    unmatched = 0
    for low, high in ranges:  # interval-point matching: by right end, each takes the least bucket it can (a maximum)
        match = next((b for b in free if low <= b <= high), None)
        if match is None:
            unmatched += 1
        else:
            free.remove(match)
    return unmatched <= spoiled and len(free) <= spoiled


def not_timed(snap: Any) -> None:
    """Nothing went untimed, but for calls whose entry probe run the kernel skipped: their returns are
    unmatched."""
    assert (snap.too_deep, snap.untracked) == (0, 0) and snap.unmatched <= snap.missed, snap


def test_counts_per_bucket_match_the_known_sleeps(worker):
    for _ in range(3):
        with FunctionLatency(str(worker), "work") as tracer:
            measured = run_worker(worker, *STEPS)["work"]
            snap = tracer.snapshot()
        # The kernel times from entry to return, inside the caller's own clock readings; calls lost to skipped
        # probe runs are at most the longest.
        lost = sum(heapq.nlargest(snap.missed, measured))
        assert sum(measured) - lost - 18 * 1_000_000 < snap.sum_ns <= sum(measured)
        # The kernel must agree with the worker's own clock, call by call, whatever the machine did.
        assert fits(used(snap.slots), measured, sum(measured) - snap.sum_ns, spoiled=snap.missed), \
            f"the worker measured {measured} ns"
        if buckets(measured) == EXPECTED_US_BUCKETS:
            break
        # A busy machine overslept a call past its bucket: the tool was right, the run is not the one planned.
    if buckets(measured) != EXPECTED_US_BUCKETS:  # the kernel agreed with each run; the scheduler did not
        pytest.skip(f"this machine overslept three runs in a row (e.g. under emulation): {measured} ns")
    assert_counted(snap.count, 18, missed=snap.missed)
    not_timed(snap)
    assert snap.histogram.average == pytest.approx(snap.sum_ns / snap.count / 1000)
    # 10 of the 18 calls sleep 1,350 us: the median's bucket while they are half the calls counted.
    p50 = snap.histogram.percentile(50)
    assert p50 is not None and ((p50.low, p50.high) == (1024, 2047)) is (2 * snap.slots[10] >= snap.count)


def test_nanosecond_and_millisecond_units(worker):
    for unit in (Unit.MSECS, Unit.NSECS):
        with FunctionLatency(str(worker), "work", unit=unit) as tracer:
            measured = run_worker(worker, *STEPS)["work"]
            snap = tracer.snapshot()
        assert fits(used(snap.slots), measured, sum(measured) - snap.sum_ns, unit.ns, spoiled=snap.missed), measured
        assert_counted(snap.count, 18, missed=snap.missed)
        assert snap.histogram.unit == unit.label


def test_recursion_times_every_level(worker):
    depth, sleep_us = 5, 2000
    with FunctionLatency(str(worker), "recurse") as tracer:
        measured = run_worker(worker, f"recurse:{depth}:{sleep_us}")["recurse"]
        snap = tracer.snapshot()
    assert_counted(snap.count, depth, missed=snap.missed)
    not_timed(snap)
    assert fits(used(snap.slots), measured, sum(measured) - snap.sum_ns, spoiled=snap.missed * depth), measured
    # Level d lasts about d x 2 ms (30 ms in all, not 5 x 2 ms): each level timed from its own entry.
    # Each level reads its clock inside the function, the kernel just outside it, on the same clock:
    # the kernel's span holds the function's own, and exceeds it by the probes' cost and whatever
    # preemption fell between (a busy machine: up to a millisecond or two a level). A skipped probe run
    # pairs levels with others' entries: then only the buckets above are known.
    if not snap.missed:
        assert 0 <= snap.sum_ns - sum(measured) < depth * 2_000_000


def test_recursion_deeper_than_the_stack_is_counted_not_timed(worker):
    with FunctionLatency(str(worker), "recurse") as tracer:
        run_worker(worker, "recurse:40:0", "recurse:3:0")
        snap = tracer.snapshot()
    assert_counted(snap.too_deep, 40 - 32, missed=snap.missed)
    # The stack unwound correctly: the next recursion starts at depth 0.
    assert_counted(snap.count, 32 + 3, missed=snap.missed, per_run=40)
    assert snap.unmatched <= snap.missed


def test_pid_filter_excludes_another_instance(worker):
    steps = ["work:1350:4"]
    traced, other = (subprocess.Popen([str(worker), "--wait", *steps], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True) for _ in range(2))
    try:
        for proc in (traced, other):
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        with FunctionLatency(str(worker), "work", pid=traced.pid) as tracer:
            outputs = [proc.communicate("go\n", timeout=30)[0] for proc in (traced, other)]
            snap = tracer.snapshot()
    finally:
        for proc in (traced, other):
            proc.kill()
            proc.wait()
    assert [out.count("work ") for out in outputs] == [4, 4]
    assert_counted(snap.count, 4, missed=snap.missed)
    measured = [int(line.split()[1]) for line in outputs[0].splitlines()]
    assert fits(used(snap.slots), measured, sum(measured) - snap.sum_ns, spoiled=snap.missed)


def test_library_by_name_libc_getpid():
    with FunctionLatency("libc", "getpid", pid=os.getpid(), unit=Unit.NSECS) as tracer:
        assert tracer.path.startswith("/") and "libc.so" in tracer.path
        for _ in range(200):
            os.getpid()
        snap = tracer.snapshot()
    assert_counted(snap.count, 200, missed=snap.missed)
    assert snap.histogram.percentile(50) is not None


def intervals_after(proc: subprocess.Popen[str], moment: float) -> list[dict[str, Any]]:
    """The interval records read up to the first whose snapshot was taken after `moment` (wall clock): the one
    after the first printed after it (a record's time is read after its snapshot)."""
    assert proc.stdout is not None
    records: list[dict[str, Any]] = []
    first_later: int | None = None
    while first_later is None or len(records) < first_later + 2:
        line = proc.stdout.readline()
        assert line, "the tool ended early"
        records.append(json.loads(line))
        if first_later is None and records[-1]["time"] > moment + 0.001:  # times are rounded to the millisecond
            first_later = len(records) - 1
    return records


def test_cli_json_intervals_and_final(worker):
    proc = subprocess.Popen([*BPFSCOPE, "funclatency", f"{worker}:work", "--json", "--interval", "0.2",
                             "--duration", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None and proc.stdout is not None
        ready = proc.stderr.readline()
        assert ready.startswith("Tracing "), ready + proc.stderr.read()
        measured = run_worker(worker, *STEPS)["work"]
        intervals = intervals_after(proc, time.time())  # so they hold every call
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    out, err = proc.stdout.read(), proc.stderr.read()  # through the files: readline() may have read ahead
    assert proc.returncode == 0, err
    records = intervals + [json.loads(line) for line in out.splitlines()]
    final = records[-1]
    assert final["final"] is True and final["unit"] == "usecs" and final["symbol"] == "work"
    kernel = {i: b["count"] for i, b in enumerate(final["buckets"]) if b["count"]}
    assert fits(kernel, measured, sum(measured) - final["sum_ns"], spoiled=final["missed"]), measured
    assert_counted(final["count"], 18, missed=final["missed"])
    assert (final["buckets"][10]["low"], final["buckets"][10]["high"]) == (1024, 2047)
    if buckets(measured) == EXPECTED_US_BUCKETS and 2 * kernel.get(10, 0) >= final["count"]:  # not overslept
        assert final["percentiles"]["p50"]["low"] == 1024  # 10 of the 18 calls sleep 1,350 us
    assert sum(r["count"] for r in records[:-1]) == final["count"]  # the intervals add up to the whole run
    assert "Traceback" not in err


def test_cli_text_histogram(worker):
    proc = subprocess.Popen([*BPFSCOPE, "funclatency", f"{worker}:work", "--duration", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("Tracing ")
        measured = run_worker(worker, *STEPS)["work"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    start = lines.index("     usecs               : count     distribution")
    slots = [0] * 64
    for line in lines[start + 1:]:
        if "->" not in line:
            break
        low, count = int(line.split()[0]), int(line.split(":")[1].split()[0])
        slots[bucket_of(low)] = count
    # The rows drawn are the histogram of the kernel's counts, and those fit the worker's own clock.
    assert lines[start: start + len(Log2Histogram(slots, "usecs").lines())] == Log2Histogram(slots, "usecs").lines()
    summary = next(i for i, line in enumerate(lines) if line.startswith("count "))
    counted = re.match(r"count (\d+), average ([\d,.]+)", lines[summary])
    assert counted is not None, out
    # Nothing untimed is noted, but for probe runs the kernel skipped.
    notes = "\n".join(lines[summary + 1:])
    skipped = re.search(r"([\d,]+) probe runs the kernel skipped", notes)
    missed = int(skipped.group(1).replace(",", "")) if skipped else 0
    assert bool(notes) is bool(missed), notes
    count, average_us = int(counted.group(1)), float(counted.group(2).replace(",", ""))
    assert_counted(count, 18, missed=missed)
    assert fits(used(tuple(slots)), measured, sum(measured) - int(average_us * count * 1000) + count * 1000,
                spoiled=missed), measured


def programs_of(pid: int) -> set[int]:
    """The programs process `pid` holds, which must be funclatency's two."""
    held = held_by(pid)
    assert {name for id, name in loaded().items() if id in held} == set(PROGRAMS)
    return held


def test_kill_9_leaves_nothing_attached(worker):
    proc = subprocess.Popen([*BPFSCOPE, "funclatency", f"{worker}:work", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None and proc.stderr.readline().startswith("Tracing ")
    its_programs = programs_of(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert not still_loaded(its_programs)  # the kernel frees programs once their last fd is gone


@pytest.fixture(scope="module")
def fake_go_binary(worker: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The worker with the section the Go linker writes first: enough for the detection."""
    directory = tmp_path_factory.mktemp("go")
    payload = directory / "buildinfo"
    payload.write_bytes(b"\xff Go buildinf:\x08\x02")
    binary = directory / "gobinary"
    subprocess.run(["objcopy", "--add-section", f".go.buildinfo={payload}", str(worker), str(binary)], check=True)
    return binary


def test_go_binaries_are_refused(fake_go_binary, worker):
    assert is_go_binary(str(fake_go_binary)) and not is_go_binary(str(worker))
    with pytest.raises(BpfscopeError, match="funclatency refuses Go binaries") as raised:
        FunctionLatency(str(fake_go_binary), "work").open()
    assert GO_REFUSAL in str(raised.value)


GO_PROGRAMS = ("kubectl", "docker", "terraform", "containerd", "runc", "gh", "hugo", "kpt")


def test_a_real_go_binary_is_refused(tmp_path):
    go = shutil.which("go")
    if go is not None:
        (tmp_path / "main.go").write_text("package main\nfunc main() {}\n")
        subprocess.run([go, "build", "-o", "hello", "main.go"], cwd=tmp_path, check=True,
                       env={**os.environ, "GOCACHE": str(tmp_path / "cache"), "GO111MODULE": "off"})
        binary = str(tmp_path / "hello")
    else:
        found = [path for path in map(shutil.which, GO_PROGRAMS) if path]
        if not found:
            pytest.skip("neither go nor a Go program is here; the .go.buildinfo section test covers the detection")
        binary = found[0]
    assert is_go_binary(binary)
    assert not is_go_binary(os.path.realpath(sys.executable))
    assert_one_line_error(funclatency(f"{binary}:main.main"), "is a Go binary", GO_REFUSAL)


def test_parse_target():
    assert parse_target("libc:malloc") == ("libc", "malloc")
    assert parse_target("/opt/a:b/app:main") == ("/opt/a:b/app", "main")
    for bad in ("malloc", "libc:", ":malloc", "libc:mal loc"):
        with pytest.raises(ValueError, match="is not TARGET:SYMBOL"):
            parse_target(bad)


# --- bad input: one line, exit != 0, no traceback, nothing attached ---

def funclatency(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs bpfscope funclatency expecting it to fail, and checks it left nothing loaded."""
    before = unheld(PROGRAMS)
    result = subprocess.run([*BPFSCOPE, "funclatency", *args, "--duration", "1"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert not left_behind(PROGRAMS, before)
    return result


def assert_one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("bpfscope funclatency: ")
    for text in expected:
        assert text in lines[0]


def test_missing_binary():
    assert_one_line_error(funclatency("/nonexistent/app:main"), "no binary or library at /nonexistent/app")


def test_unknown_library_name():
    assert_one_line_error(funclatency("nosuchlibrary:main"), "no binary or library named 'nosuchlibrary'")


def test_missing_symbol(worker):
    assert_one_line_error(funclatency(f"{worker}:no_such_function"),
                          f"symbol 'no_such_function' not found in {worker}")


def test_not_an_elf_file(tmp_path):
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\n")
    assert_one_line_error(funclatency(f"{script}:main"), "is not an ELF file")


@pytest.mark.parametrize("spec", ["malloc", "libc:", ":malloc"])
def test_bad_target_syntax(spec):
    result = funclatency(spec)
    assert result.returncode == 2
    assert_one_line_error(result, "is not TARGET:SYMBOL")


def test_no_such_pid(worker):
    assert_one_line_error(funclatency(f"{worker}:work", "--pid", "999999999"), "no process with pid 999999999")
    result = funclatency(f"{worker}:work", "--pid", "-1")
    assert result.returncode == 2
    assert_one_line_error(result, "'-1' must be greater than 0")  # the one pid parser of every tool


def test_go_binary_refused_by_the_command(fake_go_binary):
    assert_one_line_error(funclatency(f"{fake_go_binary}:work"), "is a Go binary", GO_REFUSAL)


def test_cli_ends_when_the_traced_process_exits(worker):
    traced = subprocess.Popen([str(worker), "--wait", "work:1350:3"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert traced.stdout is not None and traced.stdout.readline() == "ready\n"
    proc = subprocess.Popen([*BPFSCOPE, "funclatency", f"{worker}:work", "--pid", str(traced.pid), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None and proc.stderr.readline().startswith("Tracing ")
        traced.communicate("go\n", timeout=30)
        out, err = proc.communicate(timeout=10)  # no signal: it stops by itself
    finally:
        proc.kill()
        traced.kill()
        traced.wait()
    assert proc.returncode == 0, err
    assert f"process {traced.pid} exited" in err
    final = json.loads(out.splitlines()[-1])
    assert final["final"] is True and final["pid"] == traced.pid
    assert_counted(final["count"], 3, missed=final["missed"])


def test_nothing_stays_loaded_after_a_kill(worker):
    proc = subprocess.Popen([*BPFSCOPE, "funclatency", f"{worker}:work", "--duration", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("Tracing ")
        its_programs = programs_of(proc.pid)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert not still_loaded(its_programs)
