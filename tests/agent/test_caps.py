"""Dropping capabilities. A drop cannot be undone, so each scenario runs in a child Python that prints
what it saw as JSON; this process keeps its own."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from bpfscope.agent.caps import CAPABILITIES, RELOAD_CAPS, current, parse_caps
from bpfscope.errors import BpfscopeError

ROOT = Path(__file__).resolve().parents[2]
BPF, PERFMON, NET_ADMIN = CAPABILITIES["CAP_BPF"], CAPABILITIES["CAP_PERFMON"], CAPABILITIES["CAP_NET_ADMIN"]
_PRELUDE = """\
import json, os, threading
from bpfscope import _libbpf
from bpfscope.agent.caps import *
from bpfscope.errors import BpfscopeError
BPF, PERFMON, NET_ADMIN = CAPABILITIES["CAP_BPF"], CAPABILITIES["CAP_PERFMON"], CAPABILITIES["CAP_NET_ADMIN"]
def new_map():
    fd = _libbpf.bpf_map_create(2, b"x", 4, 4, 1, None)  # BPF_MAP_TYPE_ARRAY: fd or -errno
    if fd >= 0:
        os.close(fd)
    return fd
"""


def _mask(*caps: int) -> int:
    return sum(1 << cap for cap in caps)


def _child(code: str, **popen: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen([sys.executable, "-c", _PRELUDE + textwrap.dedent(code)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def _run(code: str) -> Any:
    out, err = _child(code).communicate(timeout=60)
    assert not err, err
    return json.loads(out.splitlines()[-1])


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return {key: value.strip() for key, _, value in (line.partition(":") for line in f)}


@pytest.fixture(autouse=True)
def _has_reload_caps() -> None:
    assert current()["CapPrm"] & _mask(*RELOAD_CAPS) == _mask(*RELOAD_CAPS), "run the tests as root"


def test_drop_to_reload_caps_as_proc_shows_it() -> None:
    child = _child("""
        drop_capabilities(frozenset(), RELOAD_CAPS)
        print("dropped", flush=True)
        input()
    """, stdin=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == "dropped\n"
        status = _status(child.pid)
    finally:
        out, err = child.communicate("\n", timeout=60)
    assert child.returncode == 0, err
    assert int(status["CapEff"], 16) == 0
    assert int(status["CapPrm"], 16) == _mask(*RELOAD_CAPS)
    assert int(status["CapBnd"], 16) == _mask(*RELOAD_CAPS)
    assert int(status["CapInh"], 16) == int(status["CapAmb"], 16) == 0
    assert status["NoNewPrivs"] == "1"


def test_current_after_drop_keeping_some_effective() -> None:
    seen = _run("""
        drop_capabilities(frozenset({NET_ADMIN}), frozenset({BPF}))
        print(json.dumps(current()))
    """)
    assert seen == {"CapInh": 0, "CapAmb": 0, "CapEff": _mask(NET_ADMIN),
                    "CapPrm": _mask(NET_ADMIN, BPF), "CapBnd": _mask(NET_ADMIN, BPF)}


def test_effective_raises_for_the_block_and_restores() -> None:
    seen = _run("""
        drop_capabilities(frozenset(), RELOAD_CAPS)
        seen = {"before": current()["CapEff"]}
        with effective(frozenset({BPF, PERFMON})):
            seen["inside"] = current()["CapEff"]
        seen["after"] = current()["CapEff"]
        try:
            with effective(frozenset({NET_ADMIN})):
                raise RuntimeError
        except RuntimeError:
            seen["after_error"] = current()["CapEff"]
        raise_effective(frozenset({BPF}))
        seen["raised"] = current()["CapEff"]
        seen["permitted"] = current()["CapPrm"]
        print(json.dumps(seen))
    """)
    assert seen == {"before": 0, "inside": _mask(BPF, PERFMON), "after": 0, "after_error": 0,
                    "raised": _mask(BPF), "permitted": _mask(*RELOAD_CAPS)}


def test_bpf_needs_cap_bpf_raised() -> None:
    with open("/proc/sys/kernel/unprivileged_bpf_disabled") as f:
        if f.read().strip() == "0":
            pytest.skip("unprivileged bpf() is allowed here: maps are created without CAP_BPF")
    seen = _run("""
        seen = {"full": new_map()}
        drop_capabilities(frozenset(), frozenset({BPF}))
        seen["dropped"] = new_map()
        with effective(frozenset({BPF})):
            seen["raised"] = new_map()
        seen["lowered"] = new_map()
        print(json.dumps(seen))
    """)
    assert seen["full"] >= 0
    assert seen["dropped"] == -errno.EPERM
    assert seen["raised"] >= 0
    assert seen["lowered"] == -errno.EPERM


def test_what_was_dropped_stays_dropped() -> None:
    seen = _run("""
        drop_capabilities(frozenset(), frozenset())
        seen = {"map": new_map(), "caps": current()}
        for name, call in (("raise", lambda: raise_effective(frozenset({BPF}))),
                           ("keep", lambda: drop_capabilities(frozenset(), frozenset({BPF})))):
            try:
                call()
            except BpfscopeError as e:
                seen[name] = [e.errno, str(e)]
        print(json.dumps(seen))
    """)
    assert seen["map"] == -errno.EPERM
    assert seen["caps"] == {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": 0, "CapAmb": 0}
    assert seen["raise"][0] == errno.EPERM and "CAP_BPF" in seen["raise"][1]
    assert seen["keep"][0] == errno.EPERM and "cannot keep CAP_BPF" in seen["keep"][1]


def test_without_setpcap_the_bounding_set_stays_and_no_new_privs_guards_exec() -> None:
    seen = _run("""
        drop_capabilities(frozenset(), RELOAD_CAPS)
        drop_capabilities(frozenset(), frozenset({BPF}))
        print(json.dumps(current()))
    """)
    assert seen["CapPrm"] == _mask(BPF) and seen["CapEff"] == 0
    assert seen["CapBnd"] == _mask(*RELOAD_CAPS), "no CAP_SETPCAP left to drop the rest of the bounding set"


def test_refuses_while_other_threads_run() -> None:
    seen = _run("""
        stop = threading.Event()
        thread = threading.Thread(target=stop.wait)
        thread.start()
        try:
            drop_capabilities(frozenset(), RELOAD_CAPS)
        except BpfscopeError as e:
            seen = {"errno": e.errno, "message": str(e), "caps": current()}
        stop.set()
        thread.join()
        print(json.dumps(seen))
    """)
    assert seen["errno"] == errno.EBUSY
    assert "threads" in seen["message"]
    assert seen["caps"] == current()  # nothing dropped


def test_capabilities_table() -> None:
    assert sorted(CAPABILITIES.values()) == list(range(41))
    assert (CAPABILITIES["CAP_CHOWN"], CAPABILITIES["CAP_SYS_ADMIN"], CAPABILITIES["CAP_PERFMON"], BPF,
            CAPABILITIES["CAP_CHECKPOINT_RESTORE"]) == (0, 21, 38, 39, 40)
    assert RELOAD_CAPS == {BPF, PERFMON, NET_ADMIN, CAPABILITIES["CAP_SYS_ADMIN"]}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CAP_BPF,CAP_PERFMON", {BPF, PERFMON}),
        ("bpf,perfmon", {BPF, PERFMON}),
        (" cap_bpf , Perfmon,", {BPF, PERFMON}),
        ("bpf,bpf", {BPF}),
        ("none", set()),
        ("NONE", set()),
        ("", set()),
        ("CAP_NET_ADMIN", {NET_ADMIN}),
    ],
)
def test_parse_caps(text: str, expected: set[int]) -> None:
    assert parse_caps(text) == expected


@pytest.mark.parametrize("text", ["bpf,nosuch", "CAP_", "all", "bpf none"])
def test_parse_caps_unknown(text: str) -> None:
    with pytest.raises(BpfscopeError) as info:
        parse_caps(text)
    assert info.value.errno == errno.EINVAL
    assert str(info.value).startswith("unknown capability '")
    assert "known: chown, dac_override" in str(info.value) and "bpf, checkpoint_restore)" in str(info.value)


def test_current_matches_proc() -> None:
    status = _status(os.getpid())
    assert current() == {key: int(status[key], 16) for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
