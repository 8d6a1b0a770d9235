"""The bpfscope pytest plugin (netns, veth_pair, bpffs_dir, fd-leak check) comes from the installed
package's pytest11 entry point. Tests under kernel/ and tools/ load real programs: they need root
and say so when they cannot run."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Callable

import pytest

TEST_OBJECTS = Path(__file__).resolve().parent / "bpf" / "build" / platform.machine()
_KERNEL_DIRS = ("kernel", "tools", "packaging", "agent")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent.name in _KERNEL_DIRS:
            item.add_marker(pytest.mark.kernel)
            if os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason="needs root: loads BPF programs (CAP_BPF, CAP_NET_ADMIN)"))


@pytest.fixture
def test_object() -> Callable[[str], Path]:
    """Path of a compiled tests/bpf/<name>.bpf.c (built by `make bpf`)."""

    def path(name: str) -> Path:
        found = TEST_OBJECTS / f"{name}.bpf.o"
        assert found.is_file(), f"{found} is missing: run `make bpf`"
        return found

    return path
