"""bpfscope oomkill end to end: a program of the test's own allocates in a memory cgroup limited to 32 MiB
(and no swap) until the OOM killer kills it. Exactly one kill must be reported, naming its pid, comm and
cgroup as the one that hit its limit, with that limit; the kernel's own count (/proc/vmstat oom_kill) must
have moved by exactly one. The cgroup is the machine's memory controller's: cgroup v1's on a hybrid machine
such as this one, v2's where it has it. Through the library (and the agent's counter) and the command."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest
from loaded import held_by, left_behind, still_loaded, unheld

from bpfscope.errors import BpfscopeError
from bpfscope.tools.oomkill import PAGE_KB, OomKill, OomKillTracer, memory_hierarchy, oom_kills

BPFSCOPE = [sys.executable, "-m", "bpfscope.cli.main"]
PROGRAMS = ("record_kill",)
LIMIT = 32 << 20

# Prints its pid, waits for a line on stdin, then takes memory 1 MiB at a time, touching every page, up to
# 1 GiB (if no limit stopped it: exit 3).
HOG_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(void)
{
	char line[8];

	printf("%d\n", getpid());
	fflush(stdout);
	if (read(0, line, sizeof(line)) <= 0)
		return 1;
	for (int i = 0; i < 1024; i++) {
		char *chunk = malloc(1 << 20);

		if (!chunk)
			return 2;
		memset(chunk, 1, 1 << 20);
	}
	return 3;
}
"""


@pytest.fixture(scope="module")
def hog_binary(build_c: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_c(HOG_C, tmp_path_factory.mktemp("oomkill"), "oomhog", "-O0")


class MemoryCgroup:
    """A memory cgroup of the test's own limited to LIMIT with no swap, in whichever hierarchy has the memory
    controller; `path` is as the tool shows it (from that hierarchy's root)."""

    def __init__(self) -> None:
        root, self.v1 = memory_hierarchy()
        if root is None:
            pytest.skip("no memory controller is mounted (cgroup v1 or v2)")
        self.root = Path(root)
        self.dir = self.root / f"bpfscope-oomkill-{os.getpid()}"
        self.path = f"/{self.dir.name}"
        if not self.v1 and "memory" not in (self.root / "cgroup.subtree_control").read_text().split():
            (self.root / "cgroup.subtree_control").write_text("+memory")
        self.dir.mkdir()
        if self.v1:
            (self.dir / "memory.limit_in_bytes").write_text(str(LIMIT))
            memsw = self.dir / "memory.memsw.limit_in_bytes"  # memory + swap: no swap (absent without swap accounting)
            if memsw.exists():
                memsw.write_text(str(LIMIT))
        else:
            (self.dir / "memory.max").write_text(str(LIMIT))
            with contextlib.suppress(FileNotFoundError):
                (self.dir / "memory.swap.max").write_text("0")

    def add(self, pid: int) -> None:
        (self.dir / "cgroup.procs").write_text(str(pid))

    def remove(self) -> None:
        deadline = time.monotonic() + 10
        while True:  # a killed process leaves its cgroup once it is reaped
            try:
                self.dir.rmdir()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@pytest.fixture
def memory_cgroup() -> Iterator[MemoryCgroup]:
    cgroup = MemoryCgroup()
    try:
        yield cgroup
    finally:
        cgroup.remove()


class Hog:
    """The program, started, waiting, and moved into `cgroup`; `go()` lets it allocate until it is killed."""

    def __init__(self, binary: Path, cgroup: MemoryCgroup) -> None:
        self.proc = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.pid = int(self.proc.stdout.readline())
        cgroup.add(self.pid)

    def go(self) -> None:
        self.proc.communicate("go\n", timeout=60)
        assert self.proc.returncode == -signal.SIGKILL, f"not killed: exit status {self.proc.returncode}"


@pytest.fixture
def hog(hog_binary: Path, memory_cgroup: MemoryCgroup) -> Iterator[Hog]:
    made = Hog(hog_binary, memory_cgroup)
    yield made
    if made.proc.poll() is None:
        made.proc.kill()
        made.proc.wait(timeout=10)


def poll_kills(tracer: OomKillTracer, count: int) -> list[OomKill]:
    """Kills read until `count` came, or for at most 5 s (the record is in the ring before the victim dies)."""
    kills: list[OomKill] = []
    deadline = time.monotonic() + 5
    while len(kills) < count and time.monotonic() < deadline:
        kills += tracer.poll(100)
    return kills + tracer.poll(0)


def assert_the_kill(kill: OomKill, hog: Hog, cgroup: MemoryCgroup) -> None:
    assert (kill.pid, kill.tid, kill.comm) == (hog.pid, hog.pid, "oomhog")
    assert (kill.constraint, kill.oom_cgroup, kill.cgroup) == ("memcg", cgroup.path, cgroup.path)
    assert kill.totalpages == LIMIT // 1024 // PAGE_KB  # the limit that was hit: memory, or memory + swap (v1)
    assert kill.oom_counter in (("memory", "memory+swap") if cgroup.v1 else ("memory",))
    assert kill.usage_pages is not None and kill.totalpages - 64 < kill.usage_pages <= kill.totalpages
    assert kill.anon_rss_kb > LIMIT // 1024 * 3 // 4  # most of the cgroup's memory is the hog's
    assert (kill.trigger_pid, kill.trigger_comm) == (hog.pid, "oomhog")  # its own allocation failed
    assert kill.uid == 0 and kill.oom_score_adj == 0 and kill.total_vm_kb >= kill.anon_rss_kb


# --- the library --------------------------------------------------------------------------------


def test_a_process_killed_in_a_memory_cgroup_is_one_kill_naming_it_and_the_cgroup(
    hog: Hog, memory_cgroup: MemoryCgroup
) -> None:
    already = held_by(os.getpid())
    before = oom_kills()
    with OomKillTracer(pid=hog.pid) as tracer:
        its_programs = held_by(os.getpid()) - already
        hog.go()
        kills = poll_kills(tracer, 1)
        assert oom_kills() - before == 1
        tracer.tally(kills)
        (family,) = tracer.metrics()
        assert tracer.stats().lost == 0 and tracer.stats().missed == 0
    (kill,) = kills
    assert_the_kill(kill, hog, memory_cgroup)
    assert [(s.labels, s.value) for s in family.samples] == [({"constraint": "memcg", "container": "", "pod": ""},
                                                              1.0)]
    assert its_programs and not still_loaded(its_programs)


def test_the_filters_keep_out_other_victims(hog: Hog) -> None:
    before = oom_kills()
    with OomKillTracer(pid=os.getpid()) as by_pid, OomKillTracer(comm="not-the-hog") as by_comm:
        hog.go()
        time.sleep(0.3)
        assert oom_kills() - before == 1
        assert by_pid.poll(0) == [] and by_comm.poll(0) == []


def test_unknown_pid_stops_before_loading() -> None:
    with pytest.raises(BpfscopeError, match="no process with pid 999999999"):
        OomKillTracer(pid=999_999_999).open()


# --- the command --------------------------------------------------------------------------------


def start(*args: str) -> subprocess.Popen[str]:
    """`bpfscope oomkill ARGS`, returned once it traces."""
    proc = subprocess.Popen([*BPFSCOPE, "oomkill", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    first = proc.stderr.readline()
    if not first.startswith("bpfscope oomkill: tracing"):
        proc.kill()
        pytest.fail(f"bpfscope oomkill did not start: {first}{proc.communicate(timeout=10)[1]}")
    return proc


def stop_after_one(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Waits for the first line of output (the kill), then SIGTERM; all it wrote."""
    assert proc.stdout is not None
    first = proc.stdout.readline()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    return first + out, err


def test_cli_json_one_object_per_kill_and_the_kernels_count(hog: Hog, memory_cgroup: MemoryCgroup) -> None:
    proc = start("--comm", "oomhog", "--json")
    its_programs = held_by(proc.pid)
    hog.go()
    out, err = stop_after_one(proc)
    record, final = (json.loads(line) for line in out.splitlines())
    assert (record["pid"], record["comm"], record["constraint"]) == (hog.pid, "oomhog", "memcg")
    assert (record["oom_cgroup"], record["cgroup"], record["totalpages"]) == (
        memory_cgroup.path, memory_cgroup.path, LIMIT // 1024 // PAGE_KB)
    assert record["trigger"] == {"pid": hog.pid, "tid": hog.pid, "comm": "oomhog"}
    assert final["final"] is True and (final["kills"], final["kernel_oom_kills"], final["lost"]) == (1, 1, 0)
    assert err.strip().splitlines()[-1].startswith("oomkill: 1 kill (the kernel counted 1 in all), 0 lost")
    assert its_programs and not still_loaded(its_programs)


def test_cli_text_line_per_kill(hog: Hog, memory_cgroup: MemoryCgroup) -> None:
    proc = start("--pid", str(hog.pid))
    assert proc.stdout is not None
    header = proc.stdout.readline()
    assert header.split()[:4] == ["TIME", "PID", "COMM", "RSS"]
    hog.go()
    out, _ = stop_after_one(proc)
    line, summary = out.splitlines()
    assert re.match(rf"\d\d:\d\d:\d\d\.\d{{6}} +{hog.pid} oomhog +[\d.]+ +32\.0 {re.escape(memory_cgroup.path)} full",
                    line), line
    assert line.endswith(f"{hog.pid} oomhog")
    assert summary.startswith("oomkill: 1 kill (the kernel counted 1 in all), 0 lost")


def test_live_table_on_a_terminal(hog: Hog, memory_cgroup: MemoryCgroup,
                                  on_a_tty: Callable[..., tuple[int, str]]) -> None:
    status, text = on_a_tty([*BPFSCOPE, "oomkill", "--pid", str(hog.pid), "--duration", "3"],
                            ready="bpfscope oomkill (pid", then=hog.go)
    assert status == 0, text
    assert re.search(rf"│ +{hog.pid} +│ oomhog +│", text), text
    assert memory_cgroup.path in text and "1 kill (the kernel counted 1 in all)" in text


def test_nothing_stays_loaded_after_a_kill() -> None:
    proc = start()
    its_programs = held_by(proc.pid)
    assert len(its_programs) == 1
    proc.kill()
    proc.wait(timeout=10)
    assert not still_loaded(its_programs)


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("args, status, message", [
    (["--pid", "999999999"], 1, "no process with pid 999999999"),
    (["--pid", "-3"], 2, "must be greater than 0"),
    (["--comm", "a-name-longer-than-15"], 2, "1 to 15 bytes"),
    (["--cgroup", "/nonexistent/cgroup"], 2, "no such directory"),
    (["--duration", "soon"], 2, "is not a number"),
])
def test_bad_input_is_one_line_and_nothing_attached(args: list[str], status: int, message: str) -> None:
    before = unheld(PROGRAMS)
    result = subprocess.run([*BPFSCOPE, "oomkill", *args, "--duration", "1"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == status and "Traceback" not in result.stderr
    assert result.stderr.startswith("bpfscope oomkill: ") and len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr and result.stdout == ""
    assert not left_behind(PROGRAMS, before)

