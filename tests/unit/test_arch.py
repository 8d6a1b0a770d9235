"""On an architecture bpfscope has no BPF objects for, each way in stops with one line naming that architecture
and the supported ones (NotSupportedError), never a KeyError: where an object is looked up, where a module
reads a number per architecture at import, and in the CLI. platform.machine() is made to say riscv64."""

from __future__ import annotations

import errno
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bpfscope import _arch, build
from bpfscope.errors import NotSupportedError
from bpfscope.object import tool_object

ROOT = Path(__file__).resolve().parents[2]
SAID = "the riscv64 architecture is not supported: bpfscope has BPF objects for x86_64 and aarch64 only"
ON_RISCV = "import platform, sys\nplatform.machine = lambda: 'riscv64'\n"


def test_tool_object_names_the_architecture(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "riscv64")
    with pytest.raises(NotSupportedError) as caught:
        tool_object("packets")
    assert (str(caught.value), caught.value.errno) == (SAID, errno.EOPNOTSUPP)


@pytest.mark.parametrize("module", ["bpfscope._uapi", "bpfscope._libbpf", "bpfscope.maps", "bpfscope.tools.packets"])
def test_a_module_that_needs_the_architecture_at_import_says_so(module: str) -> None:
    code = ON_RISCV + (f"from bpfscope.errors import NotSupportedError\ntry:\n    import {module}\n"
                       "except NotSupportedError as exc:\n    print(exc)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, SAID + "\n", "")


@pytest.mark.parametrize("argv", [["packets", "--iface", "lo"], ["agent", "--check"], ["doctor"]])
def test_the_cli_says_so_in_one_line(argv: list[str]) -> None:
    code = ON_RISCV + "from bpfscope.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (1, f"bpfscope {argv[0]}: {SAID}\n")


def test_one_list_of_architectures() -> None:
    """bpf/Makefile builds objects for, the wheel is tagged for, `bpfscope build` compiles for and bpfscope
    runs on the same architectures."""
    (makefile,) = re.findall(r"^ARCHES := (.+)$", (ROOT / "bpf" / "Makefile").read_text(), re.M)
    (wheel,) = re.findall(r"^ARCHES = \(([^)]*)\)", (ROOT / "hatch_build.py").read_text(), re.M)
    assert tuple(makefile.split()) == tuple(re.findall(r'"(\w+)"', wheel)) == tuple(build.ARCHES) == _arch.ARCHES
