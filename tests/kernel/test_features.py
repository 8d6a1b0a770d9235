"""The probes against the running kernel. What it is known to have must probe as present and what it
lacks as absent: a broken probe fails here, it never skips. Known means kernel-facts.md for the CI
kernel, and kernels.toml's `absent` for each kernel of the VM matrix (vmtest passes it in
BPFSCOPE_EXPECT_ABSENT)."""

from __future__ import annotations

import os

import pytest

from bpfscope import mounts
from bpfscope.errors import NotSupportedError
from bpfscope.features import Feature, check_bpf_syscall, probe, require, tracepoint_arguments
from bpfscope.testing.plugin import bpf_fds

# kernel-facts.md: the CI kernel has everything but kprobes, fentry and XDP live frames.
_ABSENT_KEYS = os.environ.get("BPFSCOPE_EXPECT_ABSENT", "kprobes,fentry,xdp_live_frames").split(",")
ABSENT = [f for f in Feature if f.key in _ABSENT_KEYS]


def test_expected_absent_names_features() -> None:
    assert {f.key for f in ABSENT} == {key for key in _ABSENT_KEYS if key}


@pytest.mark.parametrize("feature", list(Feature), ids=[f.key for f in Feature])
def test_probe_matches_the_kernel(feature: Feature) -> None:
    err = probe(feature)
    if feature not in ABSENT:
        assert err is None
        require(feature)
        return
    if err is None:
        # A probe that says present loaded or attached for real, so it cannot be wrong that way; the
        # kernel changed (this build refuses fentry and live frames that the one before allowed).
        pytest.skip(f"{feature.key} was known absent here, and this kernel has it: update kernel-facts.md")
    assert isinstance(err, NotSupportedError)
    assert err.feature == feature.value
    assert feature.value in str(err)
    assert "\n" not in str(err)
    with pytest.raises(NotSupportedError, match=feature.value):
        require(feature)


def test_probes_are_cached() -> None:
    for feature in Feature:
        assert probe(feature) is probe(feature)


def test_probes_leave_nothing_open() -> None:
    probe.cache_clear()  # probe for real again
    before = bpf_fds()
    for feature in Feature:
        probe(feature)
    check_bpf_syscall()
    assert bpf_fds() == before


def _mounted(fstype: str, target: str) -> int:
    return sum(m.fstype == fstype and m.target == target for m in mounts.mounts())


def test_ensure_bpffs_is_idempotent() -> None:
    path = mounts.ensure_bpffs()
    assert path == "/sys/fs/bpf"
    count = _mounted("bpf", path)
    assert count >= 1
    assert mounts.ensure_bpffs() == path
    assert _mounted("bpf", path) == count  # not mounted again on top


def test_ensure_tracefs_is_idempotent() -> None:
    path = mounts.ensure_tracefs()
    count = _mounted("tracefs", path)
    assert count >= 1
    assert os.path.isdir(os.path.join(path, "events", "syscalls"))
    assert mounts.ensure_tracefs() == path
    assert _mounted("tracefs", path) == count
    assert mounts.tracefs_path() == path


def test_tracepoint_arguments_come_from_the_kernels_btf() -> None:
    # block_rq_complete(rq, error, nr_bytes) everywhere; sched_switch gained prev_state in 5.18
    assert tracepoint_arguments("block_rq_complete") == 3
    assert tracepoint_arguments("sched_switch") in (3, 4)
    assert tracepoint_arguments("sched_wakeup") == 1
    assert tracepoint_arguments("no_such_tracepoint") is None
