"""bpfscope opensnoop end to end: a child process makes known opens (through open, openat and
openat2, one of them failing) while the tracer runs; each must appear exactly once with its fd or
errno, and every filter must keep out the rest. Through the library and through the real command.

Where the kernel skipped runs of opensnoop's programs (`missed`), fewer may be: one skipped run (a syscall's
exit, or its entry where the arguments are stashed there) loses that one open (per_run=1 in
completeness.assert_complete)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from completeness import assert_complete, assert_counted
from loaded import held_by, left_behind, still_loaded, unheld
from streams import start_json, stop_json

from bpfscope.errors import BpfscopeError, NotSupportedError
from bpfscope.features import Feature
from bpfscope.testing.plugin import skip_unless_kernel_has
from bpfscope.tools import opensnoop
from bpfscope.tools.opensnoop import Filters, Snoop, flag_names

BPFSCOPE = [sys.executable, "-m", "bpfscope.cli.main"]
HAS_OPEN = platform.machine() == "x86_64"  # aarch64 has no open(2)

# Makes the opens listed in argv[2] (JSON: [call, path, flags] each) once a line arrives on stdin,
# after naming itself argv[1] (its comm); prints its pid first and the results (fd or -errno) last.
OPENER = textwrap.dedent("""
    import ctypes, json, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(15, sys.argv[1].encode(), 0, 0, 0)  # PR_SET_NAME
    SYS_OPEN, SYS_OPENAT2 = 2, 437
    libc.syscall.restype = ctypes.c_long

    class OpenHow(ctypes.Structure):
        _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]

    def call(name, path, flags):
        if name == "openat":
            try:
                return os.open(path, flags)
            except OSError as exc:
                return -exc.errno
        if name == "open":
            fd = libc.syscall(SYS_OPEN, path.encode(), flags, 0)
        else:
            how = OpenHow(flags, 0, 0)
            fd = libc.syscall(SYS_OPENAT2, -100, path.encode(), ctypes.byref(how), ctypes.sizeof(how))
        return fd if fd >= 0 else -ctypes.get_errno()

    opens = json.loads(sys.argv[2])
    print(os.getpid(), flush=True)
    sys.stdin.readline()
    results = []
    for name, path, flags in opens:
        fd = call(name, path, flags)
        results.append(fd)
        if fd >= 0:
            os.close(fd)
    print(json.dumps(results), flush=True)
""")


class Opener:
    """A child that makes `opens` when told to; its comm is `comm`."""

    def __init__(self, comm: str, opens: list[tuple[str, str, int]]) -> None:
        self.opens = opens
        self.proc = subprocess.Popen([sys.executable, "-c", OPENER, comm, json.dumps(opens)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.pid = int(self.proc.stdout.readline())

    def run(self) -> list[int]:
        out, _ = self.proc.communicate("go\n", timeout=30)
        return list(json.loads(out))


def known_opens(tmp: Path) -> list[tuple[str, str, int]]:
    present = tmp / "present"
    present.write_text("x")
    opens = [("openat", str(present), os.O_RDONLY | os.O_CLOEXEC),
             ("openat", "/dev/null", os.O_WRONLY),
             ("openat", str(tmp / "missing"), os.O_RDONLY),
             ("openat2", str(present), os.O_RDONLY)]
    if HAS_OPEN:
        opens.append(("open", str(present), os.O_RDONLY))
    return opens


def check_exactly_once(events: list[dict[str, Any]], opens: list[tuple[str, str, int]], results: list[int], *,
                       missed: int) -> None:
    """Each open once, in the order made, with its flags and its fd or errno; but for what skipped runs took."""
    def made(call: str, path: str, flags: int, result: int) -> tuple[Any, ...]:
        # os.open adds O_CLOEXEC (PEP 446); the raw syscalls pass the flags as given.
        flags |= os.O_CLOEXEC if call == "openat" else 0
        return (call, path, flag_names(flags), *((result, None) if result >= 0 else (None, errno.errorcode[-result])))

    assert_complete([(e["call"], e["path"], e["flags"], e["fd"], e["errno"]) for e in events],
                    [made(*o, r) for o, r in zip(opens, results)], missed=missed, ordered=True)


PROGRAMS = ("exit_openat2", "stash_exit_open")  # the kernel keeps 15 bytes of a name: stash_exit_openat2


@pytest.fixture(params=["task_pt_regs", "stash"])
def form(request: pytest.FixtureRequest, pretend_missing: Callable[..., None]) -> str:
    """Each way of reading the arguments: the saved registers at exit where the kernel has
    bpf_task_pt_regs (Linux 5.15+), and the stash from syscall entry, which every kernel can load: tried
    here as if the probe had said no."""
    if request.param == "task_pt_regs":
        skip_unless_kernel_has(Feature.TASK_PT_REGS)
    else:
        pretend_missing(Feature.TASK_PT_REGS)
    return str(request.param)


# --- the library --------------------------------------------------------------------------------


def test_own_opens_appear_exactly_once_with_fd_or_errno(tmp_path: Path, form: str) -> None:
    opens = known_opens(tmp_path)
    opener = Opener("os-lib", opens)
    already = held_by(os.getpid())
    with Snoop(Filters(pid=opener.pid)) as snoop:
        its_programs = held_by(os.getpid()) - already
        assert snoop.stashing == (form == "stash")
        results = opener.run()
        batch = snoop.poll(0)
        events = [e.as_dict() for e in snoop.events(batch)]
        assert snoop.lost == 0
        missed = snoop.obj.missed_runs()
    assert results[2] == -errno.ENOENT and results[0] >= 0
    check_exactly_once(events, opens, results, missed=missed)
    assert {e["pid"] for e in events} <= {opener.pid} and {e["comm"] for e in events} <= {"os-lib"}
    assert its_programs and not still_loaded(its_programs)


def test_count_mode_counts_per_comm_in_the_kernel(tmp_path: Path, form: str) -> None:
    present = tmp_path / "present"
    present.write_text("x")
    opens = [("openat", str(present), os.O_RDONLY)] * 300 + [("openat", str(tmp_path / "no"), os.O_RDONLY)] * 7
    opener = Opener("os-count", opens)
    with Snoop(Filters(pid=opener.pid), count=True) as snoop:
        opener.run()
        counts = snoop.counts()
        assert snoop.lost == 0
        missed = snoop.obj.missed_runs()
    (count,) = counts
    assert count.comm == "os-count"
    assert_counted(count.opens, 307, missed=missed)
    assert_counted(count.failed, 7, missed=missed)


def test_missing_tracepoint_switches_its_programs_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    monkeypatch.setattr(opensnoop, "_present_calls", lambda calls: tuple(c for c in calls if c != "openat2"))
    opens = known_opens(tmp_path)
    opener = Opener("os-noat2", opens)
    with Snoop(Filters(pid=opener.pid)) as snoop:
        assert "openat2" not in snoop.calls and "openat2" not in "".join(snoop.obj.programs)
        opener.run()
        events = snoop.events(snoop.poll(0))
        missed = snoop.obj.missed_runs()
    assert_complete([e.call for e in events], [c for c, _, _ in opens if c != "openat2"], missed=missed, ordered=True)


def test_no_tracepoint_at_all_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(opensnoop, "_present_calls", lambda calls: ())
    with pytest.raises(NotSupportedError, match="syscall tracepoints for (open, )?openat, openat2"):  # arm64: no open
        Snoop().open()


def test_unknown_pid_stops_before_loading() -> None:
    with pytest.raises(BpfscopeError, match="no process with pid 999999999"):
        Snoop(Filters(pid=999_999_999)).open()


def test_flag_names() -> None:
    assert flag_names(os.O_RDONLY) == "O_RDONLY"
    assert flag_names(os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC) == "O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC"
    assert flag_names(os.O_RDWR | os.O_TMPFILE) == "O_RDWR|O_TMPFILE"


# --- the command --------------------------------------------------------------------------------


def start(*args: str) -> subprocess.Popen[str]:
    return start_json("opensnoop", "bpfscope opensnoop: ", *args)


def stop(proc: subprocess.Popen[str]) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    records, final, err = stop_json(proc)
    assert all("final" not in r for r in records)
    return records, final, err


def test_cli_pid_filter_and_json(tmp_path: Path) -> None:
    opens = known_opens(tmp_path)
    opener = Opener("os-cli", opens)
    proc = start("--pid", str(opener.pid))
    its_programs = held_by(proc.pid)
    results = opener.run()
    events, final, err = stop(proc)
    check_exactly_once(events, opens, results, missed=final["missed"])
    failed = sum(e["errno"] is not None for e in events)
    assert (final["events"], final["failed"], final["lost"]) == (len(events), failed, 0)
    skipped = f", {final['missed']:,} program runs skipped by the kernel" if final["missed"] else ""
    assert err.strip().splitlines()[-1].endswith(
        f"{len(events)} opens ({failed} failed), 0 lost{skipped} in {final['seconds']:.1f} s")
    assert its_programs and not still_loaded(its_programs)


def test_cli_comm_filter(tmp_path: Path) -> None:
    opens = known_opens(tmp_path)
    other = Opener("os-other", opens)
    mine = Opener("os-mine", opens)
    proc = start("--comm", "os-mine")
    other.run()
    results = mine.run()
    events, final, _ = stop(proc)
    check_exactly_once(events, opens, results, missed=final["missed"])
    assert {e["pid"] for e in events} <= {mine.pid}


def test_cli_failed_filter(tmp_path: Path) -> None:
    opens = known_opens(tmp_path)
    opener = Opener("os-failed", opens)
    proc = start("--pid", str(opener.pid), "--failed")
    results = opener.run()
    events, final, _ = stop(proc)
    failing = [(o, r) for o, r in zip(opens, results) if r < 0]
    check_exactly_once(events, [o for o, _ in failing], [r for _, r in failing], missed=final["missed"])
    assert final["failed"] == final["events"] == len(events)


def test_cli_path_prefix_filter(tmp_path: Path) -> None:
    inside = tmp_path / "inside"
    inside.mkdir()
    (inside / "a").write_text("a")
    (tmp_path / "insider").write_text("not under inside/")
    opens = [("openat", str(inside / "a"), os.O_RDONLY), ("openat", str(tmp_path / "insider"), os.O_RDONLY),
             ("openat", str(inside / "gone"), os.O_RDONLY), ("openat", "/dev/null", os.O_RDONLY)]
    opener = Opener("os-prefix", opens)
    proc = start("--path-prefix", f"{inside}/")
    results = opener.run()
    events, final, _ = stop(proc)
    events = [e for e in events if e["pid"] == opener.pid]
    check_exactly_once(events, [opens[0], opens[2]], [results[0], results[2]], missed=final["missed"])


def test_cli_count_mode(tmp_path: Path) -> None:
    opens = [("openat", "/dev/null", os.O_RDONLY)] * 50 + [("openat", str(tmp_path / "no"), os.O_RDONLY)] * 5
    opener = Opener("os-cnt", opens)
    proc = start("--count", "--comm", "os-cnt", "--interval", "0.2")
    opener.run()
    records, final, err = stop(proc)
    (count,) = final["counts"]
    assert count["comm"] == "os-cnt"
    assert_counted(count["opens"], 55, missed=final["missed"])
    assert_counted(count["failed"], 5, missed=final["missed"])
    assert final["opens"] == count["opens"] and final["lost"] == 0
    assert all("counts" in r for r in records)  # the intervals' objects
    assert f"{count['opens']} opens ({count['failed']} failed) by 1 comm, 0 lost" in err


def test_cli_full_ring_counts_every_lost_event(tmp_path: Path) -> None:
    opens = [("openat", "/dev/null", os.O_RDONLY)] * 3000
    opener = Opener("os-lossy", opens)
    proc = start("--pid", str(opener.pid), "--ring-bytes", "4096")
    proc.send_signal(signal.SIGSTOP)  # a reader that does not read: the 4 KiB ring fills at once
    try:
        opener.run()
    finally:
        proc.send_signal(signal.SIGCONT)
    events, final, err = stop(proc)
    assert final["lost"] > 0 and len(events) == final["events"]
    # Nothing vanishes uncounted: each open was seen, lost to the full ring, or in a run the kernel skipped.
    assert_counted(final["events"] + final["lost"], len(opens), missed=final["missed"])
    assert f"{final['lost']:,} lost" in err.strip().splitlines()[-1]


def test_cli_text_output_and_duration(tmp_path: Path) -> None:
    opener = Opener("os-text", [("openat", str(tmp_path / "nope"), os.O_RDONLY)])
    proc = subprocess.Popen([*BPFSCOPE, "opensnoop", "--pid", str(opener.pid), "--duration", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None and proc.stderr.readline().startswith("bpfscope opensnoop: tracing")
    opener.run()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    header, *lines, summary = out.splitlines()
    assert header.split() == ["TIME", "PID", "TID", "COMM", "FD", "ERR", "FLAGS", "PATH"]
    counted = re.fullmatch(r"opensnoop \(.*\): (\d+) opens? \(\1 failed\), 0 lost"
                           r"(?:, (\d+) program runs skipped by the kernel)? in ([\d.]+) s", summary)
    assert counted is not None, out
    assert int(counted.group(1)) == len(lines)
    assert float(counted.group(3)) >= 2.0  # ended by the duration, and no sooner (a loaded machine ends later)
    assert_complete([(f"{opener.pid:>7} {opener.pid:>7} os-text" in line and "ENOENT" in line,
                      line.endswith(str(tmp_path / "nope"))) for line in lines],
                    [(True, True)], missed=int(counted.group(2) or 0))


# --- bad input ----------------------------------------------------------------------------------


def bad(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*BPFSCOPE, "opensnoop", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("bpfscope opensnoop: ")
    assert result.stdout == ""
    return result


def test_unknown_pid_is_one_line_and_nothing_attached() -> None:
    before = unheld(PROGRAMS)
    result = bad("--pid", "999999999", "--duration", "1")
    assert result.returncode == 1 and "no process with pid 999999999" in result.stderr
    assert not left_behind(PROGRAMS, before)


def test_thread_id_is_not_a_pid() -> None:
    import threading

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
    (["--pid", "abc"], "is not a process id"),
    (["--comm", "a-name-longer-than-15"], "1 to 15 bytes"),
    (["--comm", ""], "1 to 15 bytes"),
    (["--path-prefix", ""], "1 to 255 bytes"),
    (["--path-prefix", "/" * 256], "1 to 255 bytes"),
    (["--duration", "0"], "must be greater than 0"),
    (["--interval", "-1"], "must be greater than 0"),
    (["--ring-bytes", "5000"], "power of 2"),
])
def test_bad_values_exit_2(args: list[str], message: str) -> None:
    result = bad(*args)
    assert result.returncode == 2 and message in result.stderr


def test_a_record_never_shows_an_older_records_path(tmp_path: Path) -> None:
    # A small ring wraps many times: long paths first, then short ones written over them. The ring's
    # memory keeps the long ones' bytes; no short path may carry them, in objects or in JSON.
    long_path, short_path = str(tmp_path / ("l" * 150)), str(tmp_path / "s")
    batches = []
    with Snoop(Filters(pid=os.getpid(), path_prefix=str(tmp_path)), ring_bytes=1 << 14) as snoop:  # ~50 records
        for _ in range(5):
            for path in (long_path, short_path):
                for _ in range(30):
                    with contextlib.suppress(FileNotFoundError):
                        os.close(os.open(path, os.O_RDONLY))
                batches.append(snoop.poll(0))  # frees the ring: the next 30 overwrite these
        assert snoop.lost == 0
        batch = np.concatenate(batches)
        paths = [e.path for e in snoop.events(batch)]
        json_paths = [json.loads(line)["path"] for line in snoop.json_lines(batch).splitlines()]
        missed = snoop.obj.missed_runs()
    assert paths == json_paths
    assert_complete(paths, ([long_path] * 30 + [short_path] * 30) * 5, missed=missed, ordered=True)


def test_nothing_stays_loaded_after_a_kill() -> None:
    proc = start()
    its_programs = held_by(proc.pid)
    assert its_programs
    proc.kill()
    proc.wait(timeout=10)
    assert not still_loaded(its_programs)
