"""bpfscope execsnoop end to end: the test runs known commands with known arguments while the tool
watches, filtered to the test's own children, and each must appear exactly once with its exact argv,
parent, uid and result; failed execs, cut arguments, filters, loss and bad input too.

Where the kernel skipped runs of execsnoop's programs (`missed`), fewer may be: one skipped run (the entry that
stashes an exec's arguments, the exit that reports it, or the move of the stash when a thread execs) loses that
one exec (per_run=1 in completeness.assert_complete). What is seen is checked in full."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from completeness import assert_complete, assert_counted
from loaded import held_by, left_behind, loaded, still_loaded, unheld

from bpfscope.tools.execsnoop import Exec, ExecSnoop, Filters, Limits

BPFSCOPE = [sys.executable, "-m", "bpfscope.cli.main"]
PROGRAMS = ("stash_execve", "stash_execveat", "report_execve", "report_execveat", "rekey_exec")
TRUE, ECHO, SH = shutil.which("true"), shutil.which("echo"), "/bin/sh"
assert TRUE and ECHO


def run(*argv: str) -> int:
    """Runs argv (argv[0] a full path) as a child of this process; its pid."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    assert proc.wait(timeout=10) == 0
    return proc.pid


def collect(snoop: ExecSnoop) -> tuple[list[Exec], int]:
    """Everything reported (each exec is in the ring before the process that made it goes on), and the runs of
    the programs the kernel skipped."""
    execs: list[Exec] = []
    while batch := snoop.poll(0):
        execs.extend(batch)
    return execs, snoop.obj.missed_runs()


@pytest.fixture
def snoop_children() -> Iterator[ExecSnoop]:
    with ExecSnoop(filters=Filters(ppid=os.getpid())) as snoop:
        yield snoop


def own_cgroup_id() -> int:
    relative = next(line for line in Path("/proc/self/cgroup").read_text().splitlines() if line.startswith("0::"))
    root = next(line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                if line.split()[2] == "cgroup2")
    return os.stat(root + relative[3:]).st_ino


def names(ids: set[int]) -> set[str]:
    return {name for id, name in loaded().items() if id in ids}


# --- the library, on commands this test runs -------------------------------------------------

def test_known_commands_appear_once_each_with_exact_argv(snoop_children):
    hello = run(ECHO, "hello", "world")
    flag = run(TRUE, "--flag", "x", "two words", "")
    shell = run(SH, "-c", "exec /bin/echo a b c")
    execs, missed = collect(snoop_children)

    assert_complete([(e.pid, e.comm, e.path, e.argv) for e in execs], [
        (hello, "echo", ECHO, (ECHO, "hello", "world")),
        (flag, "true", TRUE, (TRUE, "--flag", "x", "two words", "")),
        (shell, "sh", SH, (SH, "-c", "exec /bin/echo a b c")),
        (shell, "echo", "/bin/echo", ("/bin/echo", "a", "b", "c")),  # the same process, a new program
    ], missed=missed, ordered=True)
    cgroup = own_cgroup_id()
    for e in execs:
        assert (e.ppid, e.uid, e.ret, e.error, e.syscall, e.cgroup_id) == (os.getpid(), 0, 0, None, "execve", cgroup)
        assert not (e.cut_args or e.more_args or e.path_cut or e.args_unreadable)
        assert abs(e.time - time.time()) < 5
    assert all(e.command_line() == f"{TRUE} --flag x 'two words' ''" for e in execs if e.pid == flag)
    assert snoop_children.lost == 0


# execs `true` with an argument that lies in a file mapped but never touched: not in the page tables
# when the syscall's entry reads argv (bpf cannot fault it in), in memory once the kernel copied it.
UNTOUCHED_ARG_C = r"""
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int fd = open(argv[1], O_RDONLY);
	char *text = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
	char *args[] = { argv[2], "first", text, "", "last", NULL };

	if (fd < 0 || text == MAP_FAILED)
		return 2;
	execv(argv[2], args);
	return 3;
}
"""


def test_arguments_the_entry_could_not_read_are_read_from_the_new_image(snoop_children, tmp_path, build_c):
    (tmp_path / "arg").write_bytes(b"from an untouched page\0")
    launcher = build_c(UNTOUCHED_ARG_C, tmp_path, "launcher", "-O1")
    child = subprocess.Popen([str(launcher), str(tmp_path / "arg"), TRUE])
    assert child.wait(timeout=10) == 0
    execs, missed = collect(snoop_children)
    mine = [e for e in execs if e.pid == child.pid and e.path == TRUE]  # not the launcher's
    assert_complete([e.argv for e in mine], [(TRUE, "first", "from an untouched page", "", "last")], missed=missed)
    assert not any(e.args_unreadable or e.more_args or e.cut_args for e in mine)


def test_failed_exec_reports_the_error_and_what_was_attempted(snoop_children, tmp_path):
    not_executable = tmp_path / "script"
    not_executable.write_text("#!/bin/sh\n")
    attempt = ("import os, sys; "
               "os.execv(sys.argv[1], ['attempt', 'x y', '--z'])")
    pids = []
    for target in ("/nonexistent/bpfscope-missing", str(not_executable)):
        child = subprocess.Popen([sys.executable, "-c", attempt, target], stderr=subprocess.DEVNULL)
        assert child.wait(timeout=10) == 1  # the FileNotFoundError / PermissionError
        pids.append(child.pid)
    execs, missed = collect(snoop_children)

    # Each child's own start is the one successful exec before its failure.
    assert_complete([(e.pid, e.path, e.argv if e.failed else None, e.ret, e.error) for e in execs], [
        (pids[0], sys.executable, None, 0, None),
        (pids[0], "/nonexistent/bpfscope-missing", ("attempt", "x y", "--z"), -2, "ENOENT"),
        (pids[1], sys.executable, None, 0, None),
        (pids[1], str(not_executable), ("attempt", "x y", "--z"), -13, "EACCES"),
    ], missed=missed, ordered=True)
    # A failed exec stays in the caller: its comm is the interpreter's, not the attempted name.
    assert all(e.comm not in ("bpfscope-missin", "script") and e.ppid == os.getpid() for e in execs if e.failed)


def test_exec_from_a_thread_is_reported_under_the_process_id(snoop_children):
    # The thread takes over the thread group's id during the exec: the entry saw the thread's id,
    # the exit sees the leader's (sched_process_exec moves the stash between them).
    code = ("import os, threading, time; "
            "threading.Thread(target=os.execv, args=('/bin/true', ['true', 'from-thread'])).start(); "
            "time.sleep(10)")
    child = subprocess.Popen([sys.executable, "-c", code])
    assert child.wait(timeout=10) == 0
    execs, missed = collect(snoop_children)
    assert_complete([(e.pid, e.argv, e.ret, e.comm) for e in execs if e.path == "/bin/true"],
                    [(child.pid, ("true", "from-thread"), 0, "true")], missed=missed)


def test_execveat_of_an_open_file(snoop_children):
    # os.execve with a file descriptor is fexecve: execveat(fd, "", argv, envp, AT_EMPTY_PATH).
    code = f"import os; os.execve(os.open({TRUE!r}, os.O_RDONLY), ['true', 'by-fd'], {{}})"
    child = subprocess.Popen([sys.executable, "-c", code])
    assert child.wait(timeout=10) == 0
    execs, missed = collect(snoop_children)
    by_fd = [e for e in execs if e.syscall == "execveat"]
    assert_complete([(e.pid, e.path, e.argv, e.ret) for e in by_fd], [(child.pid, "", ("true", "by-fd"), 0)],
                    missed=missed)
    assert all(e.command_line() == "true by-fd" for e in by_fd)


def test_argv_past_the_caps_is_cut_and_marked(snoop_children):
    long_arg = "L" * 300
    argv = [TRUE, *(f"arg{i}" for i in range(1, 10)), long_arg, *(f"more{i}" for i in range(20))]
    pid = run(*argv)
    execs, missed = collect(snoop_children)
    assert_complete([e.pid for e in execs], [pid], missed=missed)
    for e in execs:
        assert len(e.argv) == 20 and e.more_args
        assert e.argv[:10] == tuple(argv[:10])
        assert e.argv[10] == "L" * 127 and e.cut_args == (10,)  # 128 bytes with the NUL
        assert e.argv[11:] == tuple(argv[11:20])
        assert e.command_line().endswith(f"{'L' * 127}… more0 more1 more2 more3 more4 more5 more6 more7 more8 …")


def test_caps_are_knobs_and_an_argument_of_exactly_the_cap_is_not_cut():
    with ExecSnoop(filters=Filters(ppid=os.getpid()), limits=Limits(max_args=3, arg_bytes=8)) as snoop:
        run(TRUE, "1234567", "12345678")   # 7 bytes fit exactly, 8 do not
        run(TRUE, "a", "b")                # exactly max_args: nothing more
        execs, missed = collect(snoop)
    # argv[0] is the path: cut too where it is longer than 7 bytes.
    argv0, argv0_cut = TRUE[:7], (0,) if len(TRUE) > 7 else ()
    assert_complete([(e.argv, e.cut_args, e.more_args) for e in execs],
                    [((argv0, "1234567", "1234567"), (*argv0_cut, 2), False), ((argv0, "a", "b"), argv0_cut, False)],
                    missed=missed, ordered=True)


def test_a_path_longer_than_the_cap_is_cut_and_marked(snoop_children, tmp_path):
    deep = tmp_path
    while len(str(deep)) < 300:
        deep /= "d" * 40
    deep.mkdir(parents=True)
    program = deep / "prog"
    program.symlink_to(TRUE)
    run(str(program), "x")
    execs, missed = collect(snoop_children)
    assert_complete([(e.path_cut, e.path, e.argv, e.cut_args, e.ret) for e in execs],
                    [(True, str(program)[:255], (str(program)[:127], "x"), (0,), 0)], missed=missed)


# --- filters, in the kernel --------------------------------------------------------------------

def test_comm_filter_matches_the_programs_name_only():
    with ExecSnoop(filters=Filters(ppid=os.getpid(), comm="echo")) as snoop:
        run(TRUE, "echo")
        echo = run(ECHO, "only", "me")
        with pytest.raises(FileNotFoundError):
            subprocess.run(["/nonexistent/echo", "failed"], check=False)
        run(SH, "-c", "/bin/echo child-of-sh; true")   # the right name, but the shell's child
        execs, missed = collect(snoop)
    assert_complete([(e.pid if e.ret == 0 else None, e.path, e.argv, e.ret) for e in execs],
                    [(echo, ECHO, (ECHO, "only", "me"), 0),
                     (None, "/nonexistent/echo", ("/nonexistent/echo", "failed"), -2)],
                    missed=missed, ordered=True)


def test_uid_filter_sees_only_that_user():
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed, so no command can run as another user")
    with ExecSnoop(filters=Filters(ppid=os.getpid(), uid=65534)) as snoop:
        run(ECHO, "as-root")
        pid = run(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", ECHO, "as-nobody")
        execs, missed = collect(snoop)
    assert_complete([(e.pid, e.uid, e.argv, e.comm) for e in execs], [(pid, 65534, (ECHO, "as-nobody"), "echo")],
                    missed=missed)


def test_failed_filter_sees_only_failures():
    with ExecSnoop(filters=Filters(ppid=os.getpid(), failed_only=True)) as snoop:
        run(TRUE)
        with pytest.raises(FileNotFoundError):
            subprocess.run(["/nonexistent/bpfscope-x", "y"], check=False)
        execs, missed = collect(snoop)
    assert_complete([(e.path, e.argv, e.ret) for e in execs],
                    [("/nonexistent/bpfscope-x", ("/nonexistent/bpfscope-x", "y"), -2)], missed=missed)


@pytest.fixture
def cgroup() -> Iterator[Path]:
    roots = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines() if line.split()[2] == "cgroup2"]
    if not roots:
        pytest.skip("no cgroup v2 file system mounted")
    path = Path(roots[0]) / f"bpfscope-execsnoop-{os.getpid()}"
    path.mkdir()
    try:
        yield path
    finally:
        path.rmdir()  # its one process has exited


def test_cgroup_filter_sees_only_execs_inside_it(cgroup):
    with ExecSnoop(filters=Filters(cgroup_id=cgroup.stat().st_ino)) as snoop:
        run(ECHO, "outside")
        # The shell moves itself in, then execs: only that second exec is inside.
        pid = run(SH, "-c", f"echo $$ > {cgroup}/cgroup.procs && exec {ECHO} inside")
        execs, missed = collect(snoop)
    assert_complete([(e.pid, e.argv, e.cgroup_id) for e in execs], [(pid, (ECHO, "inside"), cgroup.stat().st_ino)],
                    missed=missed)


# --- the command --------------------------------------------------------------------------------

def start(*extra: str) -> subprocess.Popen[str]:
    """`bpfscope execsnoop` watching this test's children; returns once it is attached."""
    proc = subprocess.Popen([*BPFSCOPE, "execsnoop", "--ppid", str(os.getpid()), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stderr.readline()  # type: ignore[union-attr]
    if not first.startswith("bpfscope execsnoop: tracing"):
        proc.kill()
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"bpfscope execsnoop did not start: {first}{err}")
    return proc


def stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """SIGTERM; the tool reads what the ring holds before it ends, and each exec is there before its process goes
    on."""
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    return out, err


def test_json_lines_and_final_summary():
    proc = start("--json")
    its_programs = held_by(proc.pid)  # no bpftool here: it would be one of the children it traces
    try:
        echo = run(ECHO, "json", "it's")
        with pytest.raises(FileNotFoundError):
            subprocess.run(["/nonexistent/json"], check=False)
    finally:
        out, err = stop(proc)
    records: list[dict[str, Any]] = [json.loads(line) for line in out.splitlines()]
    *execs, final = records
    assert final["final"] is True and final["lost"] == 0
    # The failed exec's pid and comm are those of a child this process forked.
    assert_complete([(r["path"], *r["argv"], r["ret"], r["error"], *((r["pid"], r["comm"]) if r["ret"] == 0 else ()))
                     for r in execs],
                    [(ECHO, ECHO, "json", "it's", 0, None, echo, "echo"),
                     ("/nonexistent/json", "/nonexistent/json", -2, "ENOENT")],
                    missed=final["missed"], ordered=True)
    assert all(r["ppid"] == os.getpid() and r["uid"] == 0 for r in execs)
    failed = sum(r["ret"] != 0 for r in execs)
    assert (final["execs"], final["failed"]) == (len(execs), failed)
    assert final["filters"]["ppid"] == os.getpid()
    skipped = f", {final['missed']:,} program runs skipped by the kernel" if final["missed"] else ""
    assert err.strip().splitlines()[-1].startswith(
        f"execsnoop: {len(execs)} execs ({len(execs) - failed} ok, {failed} failed), 0 lost{skipped} in")
    assert its_programs and not still_loaded(its_programs)


@pytest.mark.parametrize("flag", ["--comm", "-c", "--name"])  # --name: --comm's old name, still taken
def test_comm_filter_from_the_command_line(flag):
    proc = start("--json", flag, "echo")
    try:
        run(TRUE, "echo")
        echo = run(ECHO, "only", "me")
    finally:
        out, _ = stop(proc)
    *execs, final = [json.loads(line) for line in out.splitlines()]
    assert_complete([(r["pid"], *r["argv"]) for r in execs], [(echo, ECHO, "only", "me")], missed=final["missed"])
    assert final["filters"]["comm"] == "echo"


def test_plain_lines_and_loss_shown_in_the_last_line():
    # A 4 KiB ring holds one 2.9 KiB event: with the reader stopped, the next four are lost.
    proc = start("--ring-bytes", "4096")
    try:
        os.kill(proc.pid, signal.SIGSTOP)
        pids = [run(TRUE, f"n{i}") for i in range(5)]
        os.kill(proc.pid, signal.SIGCONT)
    finally:
        out, _ = stop(proc)
    header, *lines, last = out.strip().splitlines()
    assert header.split() == ["TIME", "PID", "PPID", "UID", "RET", "COMM", "COMMAND"]
    counted = re.match(r"execsnoop: 1 execs \(1 ok, 0 failed\), (\d+) lost(?:, (\d+) program runs skipped by the "
                       r"kernel)? in", last)
    assert counted is not None and len(lines) == 1, out
    lost, missed = int(counted.group(1)), int(counted.group(2) or 0)
    assert_counted(1 + lost, 5, missed=missed)  # each shown, lost to the full ring, or in a skipped run
    # The first exec the ring took is the one shown.
    assert_complete([tuple(lines[0].split()[1:])], [(str(pids[0]), str(os.getpid()), "0", "0", "true", TRUE, "n0")],
                    missed=missed)


def test_nothing_stays_loaded_after_a_kill():
    proc = start()
    its_programs = held_by(proc.pid)
    assert names(its_programs) == set(PROGRAMS)
    proc.kill()
    proc.wait(timeout=10)
    assert not still_loaded(its_programs)


@pytest.mark.parametrize("args, expected", [
    (["--uid", "nosuchuser-bpfscope"], "no user 'nosuchuser-bpfscope'"),
    (["--uid", "-1"], "no user '-1'"),
    (["--ppid", "0"], "must be greater than 0"),  # the one pid parser of every tool
    (["--ppid", "x"], "is not a process id"),
    (["--comm", "a/b"], "matches no exec: an exec's comm is the last component of the path executed"),
    (["--name", "a/b"], "matches no exec"),  # --comm's old name, still taken
    (["--comm", ""], "must be 1 to 15 bytes"),  # the one comm parser of every tool: a comm is 15 bytes at most
    (["--comm", "a-name-longer-than-15"], "must be 1 to 15 bytes"),
    (["--max-args", "0"], "must be from 1 to 20"),
    (["--max-args", "21"], "must be from 1 to 20"),
    (["--arg-bytes", "129"], "must be from 2 to 128"),
    (["--duration", "0"], "must be greater than 0"),
    (["--ring-bytes", "5000"], "power of 2"),
    (["--cgroup", "/nonexistent/cg"], "no such directory"),
    (["--cgroup", "/tmp"], "not a cgroup v2 directory"),
])
def test_bad_input_is_one_line_and_loads_nothing(args, expected):
    before = unheld(PROGRAMS)
    result = subprocess.run([*BPFSCOPE, "execsnoop", *args, "--duration", "1"] if "--duration" not in args
                            else [*BPFSCOPE, "execsnoop", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bpfscope execsnoop:") and expected in lines[0], result.stderr
    assert result.stdout == ""
    assert not left_behind(PROGRAMS, before)
