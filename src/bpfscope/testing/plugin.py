"""pytest plugin: a veth pair in a fresh netns per test, a bpffs directory, and checks that nothing leaks.
Opt in from a conftest.py with `pytest_plugins = ["bpfscope.testing.plugin"]`; importing it loads no
libbpf (what needs it is imported when a fixture or probe runs).

Every test fails if it leaves a BPF file descriptor open (map, program, link, BTF, perf event), and the
session fails if a namespace, veth or bpffs directory that this run made is still there at the end.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .netns import VethPair, foreign_namespaces, own_leftovers

if TYPE_CHECKING:
    from ..features import Feature

__all__ = ["bpf_fds", "bpffs_dir", "fd_leak_check", "skip_unless_kernel_has", "skip_unless_root", "veth_pair"]

BPFFS_TEST_PREFIX = "bpfscope-test-"

# anon_inode names: bpf-map, bpf-prog, bpf_link, bpf-token, btf, [perf_event]
_BPF_FD_KINDS = ("bpf", "btf", "perf_event")

_created_dirs: set[Path] = set()
# (line, color) for pytest_terminal_summary, filled by pytest_sessionfinish.
_leftover_report: list[tuple[str, str]] = []


def skip_unless_root() -> None:
    """Skip the calling test unless it runs as root."""
    if os.geteuid() != 0:
        pytest.skip("needs root (CAP_BPF, CAP_NET_ADMIN)")


def bpf_fds() -> dict[int, str]:
    """This process's open BPF-object fds: fd → its /proc/self/fd link target."""
    fds: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:  # the directory fd listdir used, closed by now
            continue
        if target.startswith("anon_inode:") and any(kind in target for kind in _BPF_FD_KINDS):
            fds[int(name)] = target
    return fds


def skip_unless_kernel_has(*features: Feature) -> None:
    """Skip the calling test, saying why in one line, unless this kernel has every feature (probed)."""
    from ..features import probe

    skip_unless_root()
    for feature in features:
        missing = probe(feature)
        if missing is not None:
            pytest.skip(str(missing))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "requires_root: skip unless root (CAP_BPF, CAP_NET_ADMIN)")
    config.addinivalue_line(
        "markers", "requires(*features): skip unless this kernel has each bpfscope.features.Feature (probed)"
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("requires_root"):
        skip_unless_root()
    for marker in item.iter_markers("requires"):
        skip_unless_kernel_has(*marker.args)


@pytest.fixture
def veth_pair() -> Iterator[VethPair]:
    """A VethPair, closed after the test whatever happens."""
    skip_unless_root()
    with VethPair() as pair:
        yield pair


@pytest.fixture
def bpffs_dir() -> Iterator[Path]:
    """A fresh directory on bpffs (mounted at /sys/fs/bpf first if needed), removed with its pins after."""
    from ..mounts import ensure_bpffs

    skip_unless_root()
    path = Path(ensure_bpffs()) / f"{BPFFS_TEST_PREFIX}{secrets.token_hex(4)}"
    path.mkdir()
    _created_dirs.add(path)
    try:
        yield path
    finally:
        if path.exists():
            shutil.rmtree(path)  # unlinking a pin releases the kernel object's reference


@pytest.fixture(autouse=True)
def fd_leak_check() -> Iterator[None]:
    """Fail the test if it ends with more BPF fds open than it started with."""
    before = bpf_fds()
    yield
    after = bpf_fds()
    if len(after) > len(before):
        new = ", ".join(f"{fd} -> {link}" for fd, link in sorted(after.items()) if before.get(fd) != link)
        pytest.fail(f"test leaked {len(after) - len(before)} BPF fd(s): {new}", pytrace=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from ..mounts import BPFFS

    own = own_leftovers() + [f"bpffs directory {path}" for path in sorted(_created_dirs) if path.exists()]
    # Another test run on this machine may be using its own; those are reported, not failed on.
    others = [f"netns {ns}" for ns in foreign_namespaces()]
    others += [
        f"bpffs directory {path}"
        for path in sorted(Path(BPFFS).glob(f"{BPFFS_TEST_PREFIX}*"))
        if path not in _created_dirs
    ]
    _leftover_report.clear()
    if own:
        _leftover_report.append((f"bpfscope: this run left {', '.join(own)}", "red"))
    if others:
        _leftover_report.append((f"bpfscope: found, of another run: {', '.join(others)}", "yellow"))
    if session.config.pluginmanager.get_plugin("terminalreporter") is None:
        for line, _ in _leftover_report:
            print(line)
    if own and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # Here, not in pytest_sessionfinish, the progress line has been ended.
    for line, color in _leftover_report:
        terminalreporter.write_line(line, **{color: True})
