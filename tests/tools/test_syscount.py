"""bpfscope syscount end to end: a C program of the test's own makes known numbers of known syscalls (1000
getppid, 500 openat that fail with ENOENT and one that opens /dev/null, 300 write to it) once told to; the
counts for its process, by syscall and by errno, must be exactly those, through the library, the agent's
metrics and the real command. The syscall table is checked against this machine's unistd headers.

Where the kernel skipped runs of syscount's programs (`missed`), fewer may be counted: one skipped run of the
exit program loses one call (completeness.assert_counted)."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest
from completeness import assert_counted
from loaded import held_by, left_behind, loaded, still_loaded, unheld

from bpfscope.errors import BpfscopeError
from bpfscope.mounts import cgroup2_path
from bpfscope.tools.syscount import SyscallCounter, Totals, errno_name, syscall_names

BPFSCOPE = [sys.executable, "-m", "bpfscope.cli.main"]
PROGRAMS = ("enter_syscall", "exit_syscall")

# Names itself argv[1] (its comm), prints its pid, waits for a line on stdin (one read), then makes the calls.
CALLER_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char line[8];
	int fd;

	prctl(PR_SET_NAME, argv[1], 0, 0, 0);
	printf("%d\n", getpid());
	fflush(stdout);
	if (read(0, line, sizeof(line)) <= 0)
		return 1;
	for (int i = 0; i < 1000; i++)
		syscall(SYS_getppid);
	for (int i = 0; i < 500; i++)
		syscall(SYS_openat, AT_FDCWD, "/nonexistent/bpfscope-syscount", O_RDONLY);
	fd = open("/dev/null", O_WRONLY);
	for (int i = 0; i < 300; i++)
		if (write(fd, "x", 1) != 1)
			return 2;
	return 0;
}
"""
# What it makes once told to go (its last call, exit_group, never returns, so its exit is never seen).
MADE = {"read": 1, "getppid": 1000, "openat": 501, "write": 300}
FAILED = {"openat": {"ENOENT": 500}}


@pytest.fixture(scope="module")
def caller_binary(build_c: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_c(CALLER_C, tmp_path_factory.mktemp("syscount"), "caller", "-O2")


class Caller:
    """The program, started and waiting; `go()` lets it make its calls and waits for it to end."""

    def __init__(self, binary: Path, comm: str) -> None:
        self.proc = subprocess.Popen([str(binary), comm], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.pid = int(self.proc.stdout.readline())

    def go(self) -> None:
        self.proc.communicate("go\n", timeout=30)
        assert self.proc.returncode == 0


@pytest.fixture
def caller(caller_binary: Path) -> Iterator[Callable[[str], Caller]]:
    made: list[Caller] = []

    def make(comm: str) -> Caller:
        made.append(Caller(caller_binary, comm))
        return made[-1]

    yield make
    for c in made:
        if c.proc.poll() is None:
            c.proc.kill()
            c.proc.wait(timeout=10)


@pytest.fixture
def cgroup() -> Iterator[Path]:
    """A cgroup v2 directory of the test's own, removed after (its processes have ended)."""
    root = cgroup2_path()
    if root is None:
        pytest.skip("no cgroup v2 file system mounted")
    path = Path(root) / f"bpfscope-syscount-{os.getpid()}"
    path.mkdir()
    try:
        yield path
    finally:
        path.rmdir()


def assert_made(counts: dict[str, Totals], errors: dict[str, dict[str, int]], *, missed: int) -> None:
    """Exactly what the caller made, but for what `missed` skipped runs took."""
    assert set(counts) == set(MADE) or missed, counts
    for name, expected in MADE.items():
        assert_counted(counts.get(name, Totals()).calls, expected, missed=missed)
    assert set(errors) == set(FAILED) or missed, errors
    assert_counted(errors.get("openat", {}).get("ENOENT", 0), 500, missed=missed)
    assert counts["getppid"].errors == 0 and counts["write"].errors == 0


# --- the library --------------------------------------------------------------------------------


def test_counts_a_process_syscalls_and_errnos_exactly(caller: Callable[[str], Caller]) -> None:
    c = caller("sc-lib")
    already = held_by(os.getpid())
    with SyscallCounter(pid=c.pid) as counter:
        its_programs = held_by(os.getpid()) - already
        c.go()
        snap = counter.snapshot()
        missed = counter.obj.missed_runs()
        assert counter.lost == 0
    assert {owner.id for owner in snap.by_owner()} == {c.pid}
    assert [owner.comm for owner in snap.by_owner()] == ["sc-lib"]
    counts = snap.syscalls_of(c.pid)
    assert_made(counts, snap.errors(c.pid), missed=missed)
    for name in ("getppid", "openat", "write"):  # each entry came after the programs were attached
        t = counts[name]
        assert t.timed == t.calls and 0 < t.total_ns and t.avg_ns is not None and t.avg_ns <= t.max_ns
    assert len(its_programs) == 2 and not still_loaded(its_programs)


def test_without_latency_only_the_exit_is_hooked(caller: Callable[[str], Caller]) -> None:
    c = caller("sc-nolat")
    already = held_by(os.getpid())
    with SyscallCounter(pid=c.pid, latency=False) as counter:
        its_programs = held_by(os.getpid()) - already
        programs = loaded()
        assert {programs[p] for p in its_programs} == {"exit_syscall"}
        c.go()
        snap = counter.snapshot()
        missed = counter.obj.missed_runs()
    counts = snap.syscalls_of(c.pid)
    assert_made(counts, snap.errors(c.pid), missed=missed)
    assert all(t.timed == 0 and t.total_ns == 0 and t.avg_ns is None for t in counts.values())


def test_comm_filter_counts_only_that_comm(caller: Callable[[str], Caller]) -> None:
    other, mine = caller("sc-other"), caller("sc-mine")
    with SyscallCounter(comm="sc-mine") as counter:
        other.go()
        mine.go()
        snap = counter.snapshot()
        missed = counter.obj.missed_runs()
    assert {owner.id for owner in snap.by_owner()} == {mine.pid}
    assert_made(snap.syscalls_of(mine.pid), snap.errors(mine.pid), missed=missed)


def test_a_cgroups_calls_by_cgroup_and_in_the_agents_metrics(caller: Callable[[str], Caller], cgroup: Path) -> None:
    outside, inside = caller("sc-out"), caller("sc-in")
    (cgroup / "cgroup.procs").write_text(str(inside.pid))
    cgroup_id = cgroup.stat().st_ino
    with SyscallCounter(cgroup_id=cgroup_id, per_cgroup=True) as counter:
        outside.go()
        inside.go()
        snap = counter.snapshot()
        families = {family.name: family for family in counter.metrics()}
        missed = counter.obj.missed_runs()
    assert [(owner.id, owner.comm) for owner in snap.by_owner()] == [(cgroup_id, "sc-in")]
    assert_made(snap.syscalls_of(cgroup_id), snap.errors(cgroup_id), missed=missed)

    def value(family: str, **labels: str) -> float:
        (sample,) = [s for s in families[family].samples if s.labels == {"container": "", "pod": "", **labels}]
        return float(sample.value)

    assert_counted(int(value("bpfscope_syscalls", syscall="getppid")), 1000, missed=missed)
    assert_counted(int(value("bpfscope_syscall_errors", syscall="openat", errno="ENOENT")), 500, missed=missed)
    assert 0 < value("bpfscope_syscall_seconds", syscall="getppid") < 1


def test_the_agent_deletes_the_counters_of_cgroups_gone_once_the_map_fills(caller: Callable[[str], Caller],
                                                                            cgroup: Path) -> None:
    from bpfscope.agent.containers import ContainerResolver

    c = caller("sc-gone")
    (cgroup / "cgroup.procs").write_text(str(c.pid))
    cgroup_id = cgroup.stat().st_ino
    with SyscallCounter(cgroup_id=cgroup_id, per_cgroup=True, max_keys=5) as counter:
        counter.containers = ContainerResolver()
        c.go()
        missed = counter.obj.missed_runs()  # a skipped run can take the one read, and its counter
        assert len(counter.snapshot().counts) == 5 or missed  # (read, getppid, openat ENOENT, openat, write)
        assert {s.labels["syscall"] for f in counter.metrics() for s in f.samples} == set(MADE) or missed
        cgroup.rmdir()
        assert [s for f in counter.metrics() for s in f.samples] == []
        assert counter.snapshot().counts == {} and counter.snapshot().comms == {}
        cgroup.mkdir()  # for the fixture to remove


def test_calls_past_a_full_counters_map_are_counted_as_lost(caller: Callable[[str], Caller]) -> None:
    c = caller("sc-full")
    with SyscallCounter(pid=c.pid, max_keys=2) as counter:  # room for (read, 0) and (getppid, 0), in that order
        c.go()
        snap = counter.snapshot()
        lost, missed = counter.lost, counter.obj.missed_runs()
        assert counter.stats().lost == lost
    counts = snap.syscalls_of(c.pid)
    assert set(counts) <= {"read", "getppid"}
    assert_counted(sum(t.calls for t in counts.values()), 1001, missed=missed)
    assert_counted(lost, 801, missed=missed)


def test_unknown_pid_stops_before_loading() -> None:
    with pytest.raises(BpfscopeError, match="no process with pid 999999999"):
        SyscallCounter(pid=999_999_999).open()


def test_errno_names() -> None:
    assert (errno_name(2), errno_name(512), errno_name(524), errno_name(4000)) == ("ENOENT", "ERESTARTSYS",
                                                                                    "ENOTSUPP", "4000")


# --- the syscall table against this machine's unistd headers -------------------------------------

# arm64's uapi asm/unistd.h asks asm-generic/unistd.h for these; its __NR_clone3 is in every 64-bit table.
_ARM64_WANTS = ["-D__ARCH_WANT_RENAMEAT", "-D__ARCH_WANT_NEW_STAT", "-D__ARCH_WANT_SET_GET_RLIMIT",
                "-D__ARCH_WANT_MEMFD_SECRET", "-D__ARCH_WANT_SYS_CLONE3", "-D__BITS_PER_LONG=64"]


def header_table(header: str, flags: list[str], tmp: Path) -> dict[int, str]:
    """Every __NR_ name `header` defines, by its number (compiled and run: some are defined through others)."""
    cc = shutil.which("cc")
    if cc is None:
        pytest.fail("cc is missing: `make deps` installs gcc")
    source = f"#include <{header}>\n"
    defines = subprocess.run([cc, *flags, "-E", "-dM", "-x", "c", "-"], input=source, capture_output=True,
                             text=True)
    if defines.returncode != 0:
        pytest.skip(f"{header} is not installed here (Debian's linux-libc-dev): {defines.stderr.strip()}")
    names = sorted({fields[1] for line in defines.stdout.splitlines()
                    if len(fields := line.split()) >= 3 and fields[1].startswith("__NR_")
                    and fields[1] not in ("__NR_syscalls", "__NR_arch_specific_syscall")})
    program = tmp / "numbers.c"
    program.write_text("#include <stdio.h>\n" + source + "int main(void) {\n" + "".join(
        f'\tprintf("%d {name.removeprefix("__NR_")}\\n", {name});\n' for name in names) + "\treturn 0;\n}\n")
    subprocess.run([cc, *flags, "-o", str(tmp / "numbers"), str(program)], check=True)
    out = subprocess.run([str(tmp / "numbers")], capture_output=True, text=True, check=True).stdout
    return {int(nr): name for nr, name in (line.split() for line in out.splitlines())}


def test_x86_64_table_agrees_with_the_headers(tmp_path: Path) -> None:
    if platform.machine() != "x86_64":
        pytest.skip("the x86_64 headers are installed on x86_64 machines only")
    from_headers = header_table("asm/unistd_64.h", [], tmp_path)
    table = syscall_names("x86_64")
    assert len(from_headers) > 300 and {nr: table.get(nr) for nr in from_headers} == from_headers


def test_arm64_table_agrees_with_the_generic_headers(tmp_path: Path) -> None:
    from_headers = header_table("asm-generic/unistd.h", _ARM64_WANTS, tmp_path)
    table = syscall_names("aarch64")
    assert len(from_headers) > 280 and {nr: table.get(nr) for nr in from_headers} == from_headers


def test_numbers_this_machines_table_lacks_are_shown_as_numbers() -> None:
    assert syscall_names("sparc64") == {}
    from bpfscope.tools.syscount import Snapshot

    assert Snapshot(0.0, names=syscall_names()).name(1023) == "syscall_1023"


# --- the command --------------------------------------------------------------------------------


def start(*args: str) -> subprocess.Popen[str]:
    """`bpfscope syscount ARGS`, returned once it counts."""
    proc = subprocess.Popen([*BPFSCOPE, "syscount", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    first = proc.stderr.readline()
    if not first.startswith("bpfscope syscount: counting"):
        proc.kill()
        pytest.fail(f"bpfscope syscount did not start: {first}{proc.communicate(timeout=10)[1]}")
    return proc


def stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    return out, err


def test_cli_json_intervals_and_final_record(caller: Callable[[str], Caller]) -> None:
    c = caller("sc-json")
    proc = start("--pid", str(c.pid), "--json", "--interval", "0.2")
    its_programs = held_by(proc.pid)
    c.go()
    assert proc.stdout is not None
    first = proc.stdout.readline()  # an interval has ended
    out, err = stop(proc)
    *intervals, final = [json.loads(line) for line in (first + out).splitlines()]
    assert final["final"] is True and final["lost"] == 0 and all("final" not in r for r in intervals)
    (process,) = final["by_process"]
    assert (process["pid"], process["comm"]) == (c.pid, "sc-json")
    counts = {name: Totals(row["calls"], row["errors"]) for name, row in process["syscalls"].items()}
    errors = {name: row["errnos"] for name, row in process["syscalls"].items() if row["errnos"]}
    assert_made(counts, errors, missed=final["missed"])
    by_syscall = {row["syscall"]: row for row in final["by_syscall"]}
    assert by_syscall["openat"]["errnos"] == process["syscalls"]["openat"]["errnos"]
    assert_counted(final["calls"], sum(MADE.values()), missed=final["missed"])
    # the intervals count what came in each: together no more than the whole
    assert intervals and sum(r["calls"] for r in intervals) <= final["calls"]
    skipped = f", {final['missed']:,} program runs skipped by the kernel" if final["missed"] else ""
    assert err.strip().splitlines()[-1] == (f"syscount: {final['calls']:,} calls ({final['errors']:,} failed) by "
                                            f"1 process, 0 lost{skipped} in {final['seconds']:.1f} s")
    assert its_programs and not still_loaded(its_programs)


def test_cli_text_tables(caller: Callable[[str], Caller]) -> None:
    c = caller("sc-text")
    proc = start("--pid", str(c.pid), "--duration", "60")
    c.go()
    out, _ = stop(proc)
    assert re.search(r"^getppid +1,000 +0 ", out, re.M), out
    assert re.search(rf"^ +{c.pid} sc-text +1,802 +500 ", out, re.M), out
    assert re.search(r"^openat +ENOENT +500$", out, re.M), out
    assert out.splitlines()[-1].startswith("syscount: 1,802 calls (500 failed) by 1 process, 0 lost")


def test_live_table_on_a_terminal(caller: Callable[[str], Caller], on_a_tty: Callable[..., tuple[int, str]]) -> None:
    c = caller("sc-tty")
    status, text = on_a_tty([*BPFSCOPE, "syscount", "--pid", str(c.pid), "--duration", "2", "--interval", "0.3"],
                            ready="bpfscope syscount by process", then=c.go)
    assert status == 0, text
    assert "\x1b[1A" in text  # cursor up: the table was redrawn over itself
    assert re.search(r"│ getppid +│ +\S+ +│ +1,000 +│ +0 +│", text), text
    assert "syscount: 1,802 calls (500 failed) by 1 process" in text


def test_nothing_stays_loaded_after_a_kill() -> None:
    proc = start()
    its_programs = held_by(proc.pid)
    assert len(its_programs) == 2
    proc.kill()
    proc.wait(timeout=10)
    assert not still_loaded(its_programs)


# --- bad input ----------------------------------------------------------------------------------


def bad(*args: str) -> subprocess.CompletedProcess[str]:
    before = unheld(PROGRAMS)
    result = subprocess.run([*BPFSCOPE, "syscount", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("bpfscope syscount: ")
    assert result.stdout == ""
    assert not left_behind(PROGRAMS, before)
    return result


def test_unknown_pid_is_one_line_and_nothing_attached() -> None:
    result = bad("--pid", "999999999", "--duration", "1")
    assert result.returncode == 1 and "no process with pid 999999999" in result.stderr


def test_thread_id_is_not_a_pid() -> None:
    ready, done = threading.Event(), threading.Event()
    tids: list[int] = []

    def thread() -> None:
        tids.append(threading.get_native_id())
        ready.set()
        done.wait(30)

    t = threading.Thread(target=thread)
    t.start()
    try:
        ready.wait(10)
        result = bad("--pid", str(tids[0]), "--duration", "1")
    finally:
        done.set()
        t.join()
    assert result.returncode == 1 and f"give --pid {os.getpid()}" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--pid", "0"], "must be greater than 0"),
    (["--comm", "a-name-longer-than-15"], "1 to 15 bytes"),
    (["--cgroup", "/nonexistent/cgroup"], "no such directory"),
    (["--cgroup", "/tmp"], "not a cgroup v2 directory"),
    (["--per", "thread"], "invalid choice"),
    (["--top", "0"], "must be between 1 and"),
    (["--max-keys", "many"], "is not a whole number"),
    (["--interval", "0"], "must be greater than 0"),
])
def test_bad_values_exit_2(args: list[str], message: str) -> None:
    result = bad(*args)
    assert result.returncode == 2 and message in result.stderr
