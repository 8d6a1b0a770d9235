"""The probes against the CI kernel. What kernel-facts.md says the kernel has must probe as present: a
broken probe fails here, it never skips."""

from __future__ import annotations

import os

import pytest

from bpfscope import mounts
from bpfscope.errors import NotSupportedError
from bpfscope.features import Feature, check_bpf_syscall, probe, require
from bpfscope.testing.plugin import bpf_fds

# kernel-facts.md
PRESENT = [
    Feature.RINGBUF,
    Feature.TCX,
    Feature.BATCH_MAP_OPS,
    Feature.BTF,
    Feature.PERF_EVENTS,
    Feature.UPROBES,
    Feature.TRACEPOINTS,
    Feature.XDP_LINK,
]
ABSENT = {Feature.KPROBES: "kprobes", Feature.FENTRY: "fentry"}


def test_every_feature_is_classified() -> None:
    assert set(PRESENT) | set(ABSENT) == set(Feature)


@pytest.mark.parametrize("feature", PRESENT, ids=lambda f: f.key)
def test_present(feature: Feature) -> None:
    assert probe(feature) is None
    require(feature)


@pytest.mark.parametrize("feature", list(ABSENT), ids=lambda f: f.key)
def test_absent(feature: Feature) -> None:
    err = probe(feature)
    assert isinstance(err, NotSupportedError)
    assert err.feature == feature.value
    assert ABSENT[feature] in str(err)
    assert "\n" not in str(err)
    with pytest.raises(NotSupportedError, match=ABSENT[feature]):
        require(feature)


def test_probes_are_cached() -> None:
    for feature in Feature:
        assert probe(feature) is probe(feature)
    assert probe(Feature.KPROBES) is not None


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
