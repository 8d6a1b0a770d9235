"""Which BPF programs a process holds, read from its fds (/proc/PID/fdinfo: prog_id). Other processes on the
machine may load the same tool at the same time (another test run): a test asks about its own tool's programs
by id, never by counting every program of that name."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Collection, Iterator

_HOLDERS = ("anon_inode:bpf-prog", "anon_inode:bpf_link")  # a link holds its program too


def held_by(pid: int) -> set[int]:
    """IDs of the programs process `pid` holds through its fds (empty once it has exited)."""
    ids: set[int] = set()
    for fd in _fds(pid):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") not in _HOLDERS:
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                ids.update(int(line.split()[1]) for line in f if line.startswith("prog_id:"))
        except OSError:  # closed meanwhile, or the process is gone
            continue
    return ids


def loaded(names: Collection[str] = ()) -> dict[int, str]:
    """Programs loaded now, id → name (the kernel keeps 15 bytes of a name); only those named in `names`, if
    given."""
    shown = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True).stdout
    return {p["id"]: p.get("name", "") for p in json.loads(shown or "[]") if not names or p.get("name") in names}


def still_loaded(ids: Collection[int], timeout: float = 5.0) -> set[int]:
    """Which of `ids` are still loaded after up to `timeout` seconds (the kernel frees a program once its last
    fd, link or attachment is gone)."""
    deadline = time.monotonic() + timeout
    while (left := set(ids) & set(loaded())) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def unheld(names: Collection[str]) -> set[int]:
    """Programs with one of these names that no process holds: kept only by an attachment (a tc filter, XDP) or
    a pin, as what a tool leaves behind is. Listed before the processes are read, so a program seen here
    unheld was either left behind or freed with a process that just exited: still_loaded() tells which."""
    named = set(loaded(names))
    held: set[int] = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            held |= held_by(int(pid))
    return named - held


def left_behind(names: Collection[str], before: set[int]) -> set[int]:
    """Programs with these names that nobody holds, not among `before` (unheld() earlier), that stay loaded."""
    return still_loaded(unheld(names) - before, timeout=2.0)


def _fds(pid: int) -> Iterator[str]:
    try:
        yield from os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return
