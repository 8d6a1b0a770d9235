"""Shared by the tests of every attach kind (tests/kernel/test_attach_*.py): reading a program's hit
counters, the links the kernel holds for a program, a fresh cgroup, and a child process that attaches,
is killed with SIGKILL, and must leave nothing attached."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bpfscope import _libbpf
from bpfscope.mounts import mounts
from bpfscope.object import Object
from bpfscope.program import Program

REPO = Path(__file__).resolve().parents[2]


def hits(obj: Object, name: str) -> int:
    """Slot HIT_`name` of the object's per-CPU `hits` array, summed over CPUs."""
    return int(obj.maps["hits"].sum(int(obj.exported_type("hits_key").python_type[f"HIT_{name}"])))


def program_id(program: Program) -> int:
    return int(_libbpf.obj_info(program.fd, _libbpf.BpfProgInfo(), program.name).id)


def _program_exists(prog_id: int) -> bool:
    fd = _libbpf.bpf_prog_get_fd_by_id(prog_id)
    if fd >= 0:
        os.close(fd)
        return True
    assert -fd == errno.ENOENT, os.strerror(-fd)
    return False


def links_of(program: Program) -> list[int]:
    """Ids of the BPF links the kernel holds for `program`."""
    wanted, found = program_id(program), []
    link_id = ctypes.c_uint32(0)
    while _libbpf.bpf_link_get_next_id(link_id.value, ctypes.byref(link_id)) == 0:
        fd = _libbpf.bpf_link_get_fd_by_id(link_id.value)
        if fd < 0:
            continue  # gone since
        try:
            if _libbpf.obj_info(fd, _libbpf.BpfLinkInfo(), "link").prog_id == wanted:
                found.append(link_id.value)
        finally:
            os.close(fd)
    return found


def cgroup2_root() -> Path:
    roots = [m.target for m in mounts() if m.fstype == "cgroup2"]
    if not roots:
        pytest.skip("no cgroup v2 is mounted")
    return Path(roots[0])


@contextlib.contextmanager
def fresh_cgroup() -> Iterator[Path]:
    """A new cgroup v2 directory, removed after (its processes must have ended)."""
    path = cgroup2_root() / f"bpfscope-test-{secrets.token_hex(4)}"
    path.mkdir()
    try:
        yield path
    finally:
        deadline = time.monotonic() + 5
        while True:
            try:
                path.rmdir()
                break
            except OSError as exc:  # EBUSY until the last process in it has been reaped
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


# The child: opens argv[1], configures each program, loads it, runs the recipe (which leaves its link in
# `link`), says which programs it loaded, and waits to be killed.
_HOLDER = """
import sys
from bpfscope import _libbpf
from bpfscope.object import ObjectSpec
spec = ObjectSpec.open(sys.argv[1])
for name, program in spec.programs.items():
    {configure}
obj = spec.load()
{recipe}
ids = [_libbpf.obj_info(p.fd, _libbpf.BpfProgInfo(), p.name).id for p in obj.programs.values()]
print("attached", *ids, flush=True)
sys.stdin.read()
"""


def kill_9_leaves_nothing(object_path: Path, recipe: str, *args: str, configure: str = "pass") -> None:
    """Runs `recipe` (Python that attaches a program of `obj` and keeps the link in `link`; its extra
    arguments are sys.argv[2:]) in a child, kills the child with SIGKILL once attached, and checks that
    each of the child's programs is gone from the kernel: nothing holds them, so nothing is attached.
    `configure` is run for each program of the spec before load (`name`, `program`)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    script = _HOLDER.format(recipe=recipe, configure=configure)
    child = subprocess.Popen([sys.executable, "-c", script, str(object_path), *args],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        if not line.startswith("attached"):
            child.kill()
            raise AssertionError(f"the child did not attach: {child.communicate(timeout=30)[1]}")
        ids = [int(word) for word in line.split()[1:]]
        assert ids and all(_program_exists(i) for i in ids)
    finally:
        child.send_signal(signal.SIGKILL)  # nothing if it has ended already
        child.communicate(timeout=30)
    deadline = time.monotonic() + 10  # the kernel frees programs after an RCU grace period
    while any(_program_exists(i) for i in ids):
        assert time.monotonic() < deadline, f"programs {ids} outlived their killed process"
        time.sleep(0.05)


def one_line(exc: BaseException) -> str:
    """The error's message, checked to be one line that names no traceback."""
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text, text
    return text
