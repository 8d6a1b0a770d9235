"""EPERM from the kernel reads as what it is: a capability the process lacks ("needs root or CAP_X"), or a
refusal although the process holds everything the operation needs ("the kernel refused it although this
process has ..."), never blaming a privilege the process has. The refusals are real ones of the running
kernel, found by probing: fentry programs and XDP live frames, which the CI kernel refuses to root with
every capability (kernel-facts.md). A kernel that allows them skips with that reason."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable

import pytest

from bpfscope.build import compile_object, find_clang
from bpfscope.errors import BpfscopeError, KernelRefusedError, PermissionDeniedError
from bpfscope.features import Feature, probe
from bpfscope.object import load

BPFSCOPE = [sys.executable, "-m", "bpfscope.cli.main"]
FENTRY = textwrap.dedent("""\
    #include "vmlinux.h"
    #include <bpf/bpf_helpers.h>
    #include <bpf/bpf_tracing.h>

    SEC("fentry/bpf_fentry_test1")
    int BPF_PROG(trace_entry, int a)
    {
        return 0;
    }

    char LICENSE[] SEC("license") = "GPL";
    """)
_BPF_F_TEST_XDP_LIVE_FRAMES = 2
ROOT_CAPS = "although this process has CAP_BPF and CAP_PERFMON ("


def _setpriv(*bounding: str) -> tuple[str, ...]:
    """A prefix that runs a command as root without `bounding` (what root's effective set comes from)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed, so capabilities cannot be dropped")
    return (setpriv, "--bounding-set", ",".join(bounding), "--inh-caps", "-all", "--")


@pytest.fixture(scope="module")
def fentry_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-program fentry object's source, where this kernel refuses fentry to a privileged process."""
    refusal = probe(Feature.FENTRY)
    if refusal is None:
        pytest.skip("this kernel loads fentry programs: it refuses nothing here to show")
    if not isinstance(refusal.__cause__, KernelRefusedError):
        pytest.skip(f"fentry is absent here, not refused: {refusal}")
    try:
        find_clang()
    except BpfscopeError as exc:
        pytest.skip(str(exc))
    source = tmp_path_factory.mktemp("fentry") / "fentry_refused.bpf.c"
    source.write_text(FENTRY)
    return source


def test_a_refused_load_names_the_program_and_what_the_process_holds(fentry_source: Path) -> None:
    obj = compile_object(fentry_source)
    with pytest.raises(KernelRefusedError) as refused:
        load(obj)
    err = refused.value
    assert isinstance(err, OSError) and err.errno in (errno.EPERM, errno.EACCES)
    assert not isinstance(err, PermissionDeniedError)
    assert str(err).startswith(f"load program 'trace_entry' of {obj}: the kernel refused it {ROOT_CAPS}")
    assert "a kernel restriction: " in str(err) and "needs" not in str(err) and "\n" not in str(err)


def _build_and_load(source: Path, prefix: tuple[str, ...] = ()) -> str:
    """`bpfscope build --verify` (compile, then load): the one line it prints on stderr, after a failure."""
    output = source.with_name(f"{source.stem}.{len(prefix)}.o")
    result = subprocess.run([*prefix, *BPFSCOPE, "build", str(source), "-o", str(output), "--verify"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"bpfscope build: load program 'trace_entry' of {output}") or line.startswith(
        f"bpfscope build: load {output}"), line
    return line


def test_the_cli_says_the_kernel_refused_it_to_root(fentry_source: Path) -> None:
    line = _build_and_load(fentry_source)
    assert ROOT_CAPS in line and "needs root" not in line


@pytest.mark.parametrize(
    ("dropped", "needs"),
    [
        (("-all",), "needs root or CAP_BPF"),
        # CAP_BPF kept, CAP_PERFMON (and CAP_SYS_ADMIN, which stands in for it) gone: a tracing program
        # needs both, and the message names the one that is missing
        (("-perfmon", "-sys_admin"), "needs root or CAP_PERFMON"),
    ],
    ids=["no-capabilities", "no-perfmon"],
)
def test_the_same_load_without_the_capability_names_what_is_missing(
    fentry_source: Path, dropped: tuple[str, ...], needs: str
) -> None:
    line = _build_and_load(fentry_source, _setpriv(*dropped))
    assert line.endswith(f"Operation not permitted ({needs})"), line
    assert "although" not in line


_LIVE_FRAMES_CHILD = textwrap.dedent("""\
    import socket, struct, sys
    from bpfscope import load
    from bpfscope.agent.caps import drop_capabilities

    with load(sys.argv[1]) as obj:
        drop_capabilities(frozenset(), frozenset())  # none left in effect, the program stays loaded
        ctx = struct.pack("<6I", 0, 64, 0, socket.if_nametoindex("lo"), 0, 0)
        try:
            obj.programs["bump_counters"].test_run(bytes(64), flags=2, ctx=ctx)
        except OSError as exc:
            print(type(exc).__name__, exc)
    """)


def test_live_frames_refused_although_privileged_and_without_capabilities(
    test_object: Callable[[str], Path]
) -> None:
    """BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES on lo: the refusal read as root with every
    capability, then in a process that dropped them all after loading the program."""
    ctx = struct.pack("<6I", 0, 64, 0, socket.if_nametoindex("lo"), 0, 0)
    with load(test_object("map_types")) as obj:
        program = obj.programs["bump_counters"]
        try:
            program.test_run(bytes(64), flags=_BPF_F_TEST_XDP_LIVE_FRAMES, ctx=ctx)  # one frame, dropped on lo
        except KernelRefusedError as refused:
            assert str(refused).startswith("test_run bump_counters: the kernel refused it although this process "
                                           "has CAP_BPF (Operation not permitted; a kernel restriction: ")
        else:
            pytest.skip("this kernel runs XDP live frames: it refuses nothing here to show")
    child = subprocess.run([sys.executable, "-c", _LIVE_FRAMES_CHILD, str(test_object("map_types"))],
                           capture_output=True, text=True, timeout=60, check=False,
                           env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == ("PermissionDeniedError test_run bump_counters: Operation not permitted "
                                    "(needs root or CAP_BPF)")
