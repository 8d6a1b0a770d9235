"""bpfscope opensnoop end to end: a child process makes known opens (through open, openat and
openat2, one of them failing) while the tracer runs; each must appear exactly once with its fd or
errno, and every filter must keep out the rest. Through the library and through the real command."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

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


def check_exactly_once(events: list[dict[str, Any]], opens: list[tuple[str, str, int]], results: list[int]) -> None:
    assert len(events) == len(opens), events
    for (call, path, flags), result, event in zip(opens, results, events):
        assert (event["call"], event["path"]) == (call, path)
        # os.open adds O_CLOEXEC (PEP 446); the raw syscalls pass the flags as given.
        assert event["flags"] == flag_names(flags | (os.O_CLOEXEC if call == "openat" else 0))
        if result >= 0:
            assert (event["fd"], event["errno"]) == (result, None)
        else:
            assert (event["fd"], event["errno"]) == (None, errno.errorcode[-result])


def programs_loaded() -> bool:
    shown = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True).stdout
    # the kernel keeps 15 bytes of a name: stash_exit_openat2 shows as stash_exit_open
    return any(p.get("name") in ("exit_openat2", "stash_exit_open") for p in json.loads(shown))


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
    with Snoop(Filters(pid=opener.pid)) as snoop:
        assert snoop.stashing == (form == "stash")
        results = opener.run()
        batch = snoop.poll(0)
        events = [e.as_dict() for e in snoop.events(batch)]
        assert snoop.lost == 0
    assert results[2] == -errno.ENOENT and results[0] >= 0
    check_exactly_once(events, opens, results)
    assert {e["pid"] for e in events} == {opener.pid} and {e["comm"] for e in events} == {"os-lib"}
    assert not programs_loaded()


def test_count_mode_counts_per_comm_in_the_kernel(tmp_path: Path, form: str) -> None:
    present = tmp_path / "present"
    present.write_text("x")
    opens = [("openat", str(present), os.O_RDONLY)] * 300 + [("openat", str(tmp_path / "no"), os.O_RDONLY)] * 7
    opener = Opener("os-count", opens)
    with Snoop(Filters(pid=opener.pid), count=True) as snoop:
        opener.run()
        counts = snoop.counts()
        assert snoop.lost == 0
    assert [(c.comm, c.opens, c.failed) for c in counts] == [("os-count", 307, 7)]


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
    assert [e.call for e in events] == [c for c, _, _ in opens if c != "openat2"]


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
    """`bpfscope opensnoop --json ARGS`, returned once it traces."""
    proc = subprocess.Popen([*BPFSCOPE, "opensnoop", "--json", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    first = proc.stderr.readline()
    if not first.startswith("bpfscope opensnoop: "):
        proc.kill()
        pytest.fail(f"bpfscope opensnoop did not start: {first}{proc.communicate(timeout=10)[1]}")
    return proc


def stop(proc: subprocess.Popen[str]) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    """SIGTERM; then the events, the final summary and the rest of stderr."""
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert records and records[-1]["final"] is True
    assert all("final" not in r for r in records[:-1])
    return records[:-1], records[-1], err


def test_cli_pid_filter_and_json(tmp_path: Path) -> None:
    opens = known_opens(tmp_path)
    opener = Opener("os-cli", opens)
    proc = start("--pid", str(opener.pid))
    results = opener.run()
    events, final, err = stop(proc)
    check_exactly_once(events, opens, results)
    assert final["events"] == len(opens) and final["failed"] == 1 and final["lost"] == 0 and final["missed"] == 0
    assert err.strip().splitlines()[-1].endswith(f"{len(opens)} opens (1 failed), 0 lost in {final['seconds']:.1f} s")
    assert not programs_loaded()


def test_cli_comm_filter(tmp_path: Path) -> None:
    opens = known_opens(tmp_path)
    other = Opener("os-other", opens)
    mine = Opener("os-mine", opens)
    proc = start("--comm", "os-mine")
    other.run()
    results = mine.run()
    events, _, _ = stop(proc)
    check_exactly_once(events, opens, results)
    assert {e["pid"] for e in events} == {mine.pid}


def test_cli_failed_filter(tmp_path: Path) -> None:
    opens = known_opens(tmp_path)
    opener = Opener("os-failed", opens)
    proc = start("--pid", str(opener.pid), "--failed")
    results = opener.run()
    events, final, _ = stop(proc)
    failing = [(o, r) for o, r in zip(opens, results) if r < 0]
    check_exactly_once(events, [o for o, _ in failing], [r for _, r in failing])
    assert final["failed"] == final["events"] == 1


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
    events, _, _ = stop(proc)
    events = [e for e in events if e["pid"] == opener.pid]
    check_exactly_once(events, [opens[0], opens[2]], [results[0], results[2]])


def test_cli_count_mode(tmp_path: Path) -> None:
    opens = [("openat", "/dev/null", os.O_RDONLY)] * 50 + [("openat", str(tmp_path / "no"), os.O_RDONLY)] * 5
    opener = Opener("os-cnt", opens)
    proc = start("--count", "--comm", "os-cnt", "--interval", "0.2")
    opener.run()
    records, final, err = stop(proc)
    assert final["counts"] == [{"comm": "os-cnt", "opens": 55, "failed": 5}]
    assert final["opens"] == 55 and final["lost"] == 0
    assert all("counts" in r for r in records)  # the intervals' objects
    assert "55 opens (5 failed) by 1 comm, 0 lost" in err


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
    assert final["events"] + final["lost"] == len(opens)  # nothing vanishes uncounted
    assert f"{final['lost']:,} lost" in err.strip().splitlines()[-1]


def test_cli_text_output_and_duration(tmp_path: Path) -> None:
    opener = Opener("os-text", [("openat", str(tmp_path / "nope"), os.O_RDONLY)])
    proc = subprocess.Popen([*BPFSCOPE, "opensnoop", "--pid", str(opener.pid), "--duration", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None and proc.stderr.readline().startswith("bpfscope opensnoop: tracing")
    opener.run()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    header, *lines = out.splitlines()
    assert header.split() == ["TIME", "PID", "TID", "COMM", "FD", "ERR", "FLAGS", "PATH"]
    assert len(lines) == 2, out
    assert f"{opener.pid:>7} {opener.pid:>7} os-text" in lines[0] and "ENOENT" in lines[0]
    assert lines[0].endswith(str(tmp_path / "nope"))
    assert lines[1].startswith("opensnoop (") and "1 open (1 failed), 0 lost in 2.0 s" in lines[1]


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
    result = bad("--pid", "999999999", "--duration", "1")
    assert result.returncode == 1 and "no process with pid 999999999" in result.stderr
    assert not programs_loaded()


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
    assert paths == json_paths == ([long_path] * 30 + [short_path] * 30) * 5


def test_nothing_stays_loaded_after_a_kill() -> None:
    proc = start()
    assert programs_loaded()
    proc.kill()
    proc.wait(timeout=10)
    assert not programs_loaded()
