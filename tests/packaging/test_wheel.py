"""The wheel as a pip user gets it: one per architecture, its platform tag naming it, its objects and the
headers inside, installed in a fresh venv, run with no clang anywhere on PATH."""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from bpfscope.__about__ import __version__

ROOT = Path(__file__).resolve().parents[2]
ARCHES = ("x86_64", "aarch64")
MACHINE = platform.machine()
OTHER = next(arch for arch in ARCHES if arch != MACHINE)
HEADERS = ("bpfscope.bpf.h", "packet.bpf.h", "x86_64/vmlinux.h", "aarch64/vmlinux.h")
LIBBPF_HEADERS = ("bpf_helpers.h", "bpf_helper_defs.h", "bpf_tracing.h", "bpf_core_read.h", "bpf_endian.h",
                  "usdt.bpf.h", "libbpf_version.h")
QUIET_PIP = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}

pytestmark = pytest.mark.slow


def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, check=False, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed:\n{result.stdout}\n{result.stderr}"
    return result  # type: ignore[no-any-return]


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: loads BPF programs (CAP_BPF, CAP_NET_ADMIN)")


def build_wheel(out: Path, **env: str) -> Path:
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        env={**os.environ, **QUIET_PIP, **env}, timeout=120)
    (built,) = out.glob("bpfscope-*.whl")
    return built


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel for this machine's architecture, as `pip wheel .` builds it here."""
    return build_wheel(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed; numpy and rich come from the index (through pip's cache)."""
    path = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", str(path)], timeout=60)
    run([str(path / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        env={**os.environ, **QUIET_PIP}, timeout=120)
    return path


@pytest.fixture(scope="module")
def no_clang_env(venv: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """PATH with only the venv's bin and a directory holding `python3`: clang is nowhere on it."""
    tools = tmp_path_factory.mktemp("path")
    (tools / "python3").symlink_to(sys.executable)
    path = os.pathsep.join([str(venv / "bin"), str(tools)])
    for directory in path.split(os.pathsep):
        assert not any(name.startswith("clang") for name in os.listdir(directory)), directory
    assert shutil.which("clang", path=path) is None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    return {**env, "PATH": path}


def tags(arch: str) -> str:
    return f"py3-none-manylinux_2_17_{arch}.manylinux2014_{arch}"


def check_contents(wheel: Path, arch: str) -> None:
    """Every object the package ships for `arch` and no other's, every header, and the WHEEL file's tags."""
    archive = zipfile.ZipFile(wheel)
    names = set(archive.namelist())
    sources = sorted((ROOT / "src" / "bpfscope").glob("*/*.bpf.c"))
    assert any(s.name == "packets.bpf.c" for s in sources)
    for source in sources:
        assert f"bpfscope/_bpf/{arch}/{source.name[:-2]}.o" in names, (arch, source.name)
    assert not [n for n in names if n.startswith("bpfscope/_bpf/") and not n.startswith(f"bpfscope/_bpf/{arch}/")]
    for header in HEADERS:  # every architecture's vmlinux.h: `bpfscope build --arch` compiles for either
        assert f"bpfscope/include/{header}" in names
    for header in LIBBPF_HEADERS:  # so `bpfscope build` needs clang but not libbpf-dev
        assert f"bpfscope/include/libbpf/bpf/{header}" in names
    assert not [n for n in names if n.endswith(".d")]  # make's dependency files stay home
    metadata = archive.read(next(n for n in names if n.endswith(".dist-info/WHEEL"))).decode().splitlines()
    assert sorted(line for line in metadata if line.startswith("Tag: ")) == [
        f"Tag: py3-none-manylinux2014_{arch}", f"Tag: py3-none-manylinux_2_17_{arch}"]
    assert "Root-Is-Purelib: false" in metadata


def test_the_wheel_is_tagged_for_this_architecture_and_carries_its_objects(wheel: Path) -> None:
    assert wheel.name == f"bpfscope-{__version__}-{tags(MACHINE)}.whl"
    check_contents(wheel, MACHINE)


def test_the_other_architectures_wheel_builds_here_and_pip_refuses_it(tmp_path: Path) -> None:
    other = build_wheel(tmp_path, BPFSCOPE_WHEEL_ARCH=OTHER)
    assert other.name.endswith(f"-{tags(OTHER)}.whl")
    check_contents(other, OTHER)
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", str(other)],
                            capture_output=True, text=True, env={**os.environ, **QUIET_PIP}, timeout=120)
    assert result.returncode != 0 and "is not a supported wheel on this platform" in result.stderr


def test_an_architecture_without_objects_has_no_wheel(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
                            capture_output=True, text=True, env={**os.environ, **QUIET_PIP,
                                                                 "BPFSCOPE_WHEEL_ARCH": "riscv64"}, timeout=120)
    assert result.returncode != 0
    assert "no bpfscope wheel for riscv64: set BPFSCOPE_WHEEL_ARCH to one of x86_64, aarch64" in result.stderr


def test_installed_wheel_loads_every_object_without_clang(venv: Path, no_clang_env: dict[str, str]) -> None:
    needs_root()
    script = """
import platform, sys
from pathlib import Path
import bpfscope.build, bpfscope.object
from bpfscope.object import ObjectSpec
package = Path(bpfscope.object.__file__).parent
assert str(package).startswith(sys.prefix), package          # the installed copy, not the checkout
assert bpfscope.build.include_dir() == package / "include"
for path in sorted(package.glob("_bpf/*/*.bpf.o")):
    spec = ObjectSpec.open(path)
    if path.parent.name == platform.machine():
        spec.load().close()
        print("loaded", path.parent.name, path.name)
    else:
        spec.close()
        print("opened", path.parent.name, path.name)
"""
    result = run([str(venv / "bin" / "python"), "-c", script], env=no_clang_env, cwd=venv, timeout=60)
    lines = result.stdout.splitlines()
    assert f"loaded {MACHINE} packets.bpf.o" in lines
    assert all(line.startswith(f"loaded {MACHINE} ") for line in lines)  # this architecture's only


def test_build_without_clang_says_how_to_get_it(venv: Path, no_clang_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "mine.bpf.c").write_text('#include "bpfscope.bpf.h"\n')
    result = subprocess.run([str(venv / "bin" / "bpfscope"), "build", "mine.bpf.c"], check=False,
                            env=no_clang_env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (
        1, "bpfscope build: clang not found; install it (Debian: apt-get install clang)\n")


def test_packets_counts_loopback_traffic(venv: Path, no_clang_env: dict[str, str]) -> None:
    needs_root()
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tool = subprocess.Popen(
        [str(venv / "bin" / "bpfscope"), "packets", "--iface", "lo", "--duration", "1", "--json"],
        env=no_clang_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    sent = 0
    try:
        deadline = time.monotonic() + 30
        while tool.poll() is None and time.monotonic() < deadline and sent < 2000:
            sender.sendto(b"bpfscope", receiver.getsockname())
            sent += 1
            time.sleep(0.005)
        out, err = tool.communicate(timeout=30)
    finally:
        if tool.poll() is None:
            tool.kill()
            tool.wait()
        sender.close()
        receiver.close()
    assert tool.returncode == 0, err
    assert "Traceback" not in err
    final = json.loads(out.splitlines()[-1])
    assert final["final"] is True and final["iface"] == "lo"
    assert final["total"]["packets"] == sum(row["packets"] for row in final["l3"].values())
    assert final["total"]["bytes"] == sum(row["bytes"] for row in final["l3"].values())
    assert final["l4"]["udp"]["packets"] > 0, f"sent {sent} datagrams, none counted"
    assert "xdp" not in run(["ip", "link", "show", "dev", "lo"]).stdout  # the link died with the process
