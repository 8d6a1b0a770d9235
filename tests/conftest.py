"""The bpfscope pytest plugin (netns, veth_pair, bpffs_dir, fd-leak check) is opted into here, as a user's
own conftest.py does: installing bpfscope adds nothing to other projects' pytest runs. Tests under
kernel/ and tools/ load real programs: they need root and say so when they cannot run."""

from __future__ import annotations

import os
import platform
import pty
import select
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import settings

# No deadline for a hypothesis example: its time on a loaded machine says nothing about the code (an example of
# test_btf that takes a millisecond took 267 ms once, past the default deadline of 200 ms, and failed).
settings.register_profile("bpfscope", deadline=None)
settings.load_profile("bpfscope")

pytest_plugins = ["bpfscope.testing.plugin"]

TEST_OBJECTS = Path(__file__).resolve().parent / "bpf" / "build" / platform.machine()
_KERNEL_DIRS = ("kernel", "tools", "packaging", "agent")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent.name in _KERNEL_DIRS:
            item.add_marker(pytest.mark.kernel)
            if os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason="needs root: loads BPF programs (CAP_BPF, CAP_NET_ADMIN)"))


@pytest.fixture(scope="session", autouse=True)
def own_tc_leases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The clsact filters' leases (bpfscope.link) of everything this run starts, in a directory of its own:
    a bpfscope that attaches with clsact removes the filters of every lease it finds unheld, so another run
    on the machine would take those of a process a test killed before the test could see them removed."""
    from bpfscope.link import TC_LEASES_ENV

    leases = tmp_path_factory.mktemp("tc-leases")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(TC_LEASES_ENV, str(leases))
        yield leases


@pytest.fixture
def pretend_missing(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """pretend_missing(feature): bpfscope.variants answers as on a kernel without `feature`, so a tool
    loads the stand-in forms of its programs (which every kernel can load) on this one too."""
    from bpfscope import variants
    from bpfscope.errors import NotSupportedError
    from bpfscope.features import probe

    def pretend(feature: Any) -> None:
        lacking = NotSupportedError(feature.value, "pretended by the test")
        monkeypatch.setattr(variants, "probe", lambda asked: lacking if asked is feature else probe(asked))

    return pretend


@pytest.fixture(params=["atomics", "spin_lock"])
def atomics_form(request: pytest.FixtureRequest, pretend_missing: Callable[..., None]) -> str:
    """Each form of a program shipped twice (bpfscope.variants): the one for kernels with BPF atomics (Linux
    5.12+), skipped where this one lacks them, and the spin-lock one every kernel can load, tried here as if
    the probe had said no."""
    from bpfscope.features import Feature
    from bpfscope.testing.plugin import skip_unless_kernel_has

    if request.param == "atomics":
        skip_unless_kernel_has(Feature.ATOMICS)
    else:
        pretend_missing(Feature.ATOMICS)
    return str(request.param)


@pytest.fixture
def tc_mode() -> str:
    """The tc hook the tc tools pick on this kernel: "tcx" from Linux 6.6, "clsact" (cls_bpf) before."""
    from bpfscope.features import Feature, probe

    return "tcx" if probe(Feature.TCX) is None else "clsact"


@pytest.fixture
def test_object() -> Callable[[str], Path]:
    """Path of a compiled tests/bpf/<name>.bpf.c (built by `make bpf`)."""

    def path(name: str) -> Path:
        found = TEST_OBJECTS / f"{name}.bpf.o"
        assert found.is_file(), f"{found} is missing: run `make bpf`"
        return found

    return path


def run_on_a_tty(argv: Sequence[str], *, ready: str, then: Callable[[], None], columns: int = 160) -> tuple[int, str]:
    """Runs argv on a pseudo-terminal, calls `then()` once `ready` has been drawn (the tool attached),
    and returns its exit status and all it drew, escape sequences included."""
    main, sub = pty.openpty()
    env = dict(os.environ, COLUMNS=str(columns), LINES="40", TERM="xterm")
    proc = subprocess.Popen(argv, stdin=sub, stdout=sub, stderr=sub, env=env)
    os.close(sub)
    out, done = b"", False
    try:
        while select.select([main], [], [], 30)[0]:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
            if not done and ready.encode() in out:
                then()
                done = True
    finally:
        proc.wait(timeout=30)
        os.close(main)
    return proc.returncode, out.decode(errors="replace")


@pytest.fixture
def on_a_tty() -> Callable[..., tuple[int, str]]:
    """run_on_a_tty, for tests of the live views."""
    return run_on_a_tty


@pytest.fixture(scope="session")
def build_c() -> Callable[..., Path]:
    """build(source, directory, name, *gcc_flags): compiles a test's own C program with gcc (installed by
    `make deps`) and returns the binary's path."""

    def build(source: str, directory: Path, name: str, *flags: str) -> Path:
        gcc = shutil.which("gcc")
        if gcc is None:
            pytest.fail("gcc is missing: `make deps` installs it")
        (directory / f"{name}.c").write_text(source)
        subprocess.run([gcc, *flags, "-o", str(directory / name), str(directory / f"{name}.c")], check=True)
        return directory / name

    return build
