"""Compiles a user's .bpf.c into a CO-RE object with bpfscope's headers: the bpf2go step, done ahead
of time with clang so that nothing compiles at run time (this kernel has no headers to compile
against). The flags are bpf/Makefile's, so a user's object is built like the ones bpfscope ships."""

from __future__ import annotations

import errno
import os
import platform
import re
import shutil
import subprocess
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Union

from .errors import BpfscopeError

__all__ = [
    "ARCHES", "CompileError", "CompileWarning", "asm_include_dir", "compile_command", "compile_object", "find_clang",
    "include_dir",
]

StrPath = Union[str, "os.PathLike[str]"]

# uname -m → the __TARGET_ARCH_ bpf_tracing.h wants (it picks the pt_regs layout for PT_REGS_*).
ARCHES = {"x86_64": "x86", "aarch64": "arm64"}
_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}
# uname -m → Debian's multiarch triple, whose directory holds that architecture's <asm/...> headers.
_TRIPLES = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}
# The package that installs them on a machine of another architecture (Debian's cross headers).
_CROSS_PACKAGES = {"x86_64": "linux-libc-dev-amd64-cross", "aarch64": "linux-libc-dev-arm64-cross"}
_CLANG_VERSIONED = re.compile(r"^clang-(\d+)$")
_PACKAGE_INCLUDE = Path(__file__).parent / "include"           # in a wheel: copied by hatch_build.py
_SOURCE_INCLUDE = Path(__file__).parents[2] / "bpf" / "include"  # in a checkout or an editable install


class CompileError(BpfscopeError):
    """clang rejected the program; `diagnostics` is everything it printed."""

    def __init__(self, source: Path, returncode: int, diagnostics: str, *, arch: str | None = None) -> None:
        message = f"clang could not compile {source} (exit {returncode})"
        if "bpf/bpf_helpers.h' file not found" in diagnostics:  # a checkout without libbpf-dev; wheels carry them
            message += "; libbpf's headers are missing: install them (Debian: apt-get install libbpf-dev)"
        elif arch and _MISSING_ASM.search(diagnostics):
            message += (
                f"; the {arch} <asm/...> headers are missing: install them (Debian: apt-get install "
                f"linux-libc-dev on {arch}, {_CROSS_PACKAGES[arch]} elsewhere)"
            )
        super().__init__(errno.EINVAL, message)
        self.source = source
        self.returncode = returncode
        self.diagnostics = diagnostics


_MISSING_ASM = re.compile(r"'asm/[^']+' file not found")


class CompileWarning(UserWarning):
    """clang compiled the program but warned (-Wall); the message is its diagnostics."""


def include_dir() -> Path:
    """The directory with bpfscope.bpf.h, packet.bpf.h and <arch>/vmlinux.h."""
    for candidate in (_PACKAGE_INCLUDE, _SOURCE_INCLUDE):
        if (candidate / "bpfscope.bpf.h").is_file():
            return candidate
    raise BpfscopeError(
        errno.ENOENT, f"bpfscope's BPF headers are missing (looked in {_PACKAGE_INCLUDE} and {_SOURCE_INCLUDE})"
    )


def find_clang() -> str:
    """`clang` on PATH, else the newest `clang-N` (Debian installs clang-19 without the plain name)."""
    plain = shutil.which("clang")
    if plain:
        return plain
    versioned: list[tuple[int, str]] = []
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        try:
            names = os.listdir(directory or ".")
        except OSError:
            continue
        for name in names:
            match = _CLANG_VERSIONED.match(name)
            path = os.path.join(directory, name)
            if match and os.access(path, os.X_OK):
                versioned.append((int(match.group(1)), path))
    if not versioned:
        raise BpfscopeError(errno.ENOENT, "clang not found; install it (Debian: apt-get install clang)")
    return max(versioned)[1]


def _arch(arch: str | None) -> str:
    name = _ALIASES.get(arch or platform.machine(), arch or platform.machine())
    if name not in ARCHES:
        raise BpfscopeError(errno.EINVAL, f"no BPF target for architecture {name!r}; choose {' or '.join(ARCHES)}")
    return name


def asm_include_dir(arch: str | None = None) -> Path | None:
    """The directory whose asm/ has `arch`'s kernel uapi headers (default: this machine's), which
    <linux/errno.h> and the like include and `-target bpf` does not search: Debian's multiarch directory
    (linux-libc-dev of that architecture), else the cross headers' (linux-libc-dev-<arch>-cross). None if
    neither is installed: a program that includes no asm/ header compiles without them."""
    triple = _TRIPLES[_arch(arch)]
    for candidate in (Path("/usr/include") / triple, Path("/usr") / triple / "include"):
        if (candidate / "asm").is_dir():
            return candidate
    return None


def _default_output(source: Path) -> Path:
    return source.with_name(source.name.removesuffix(".c") + ".o")


def compile_command(
    source: StrPath, output: StrPath, *, arch: str | None = None, include_dirs: Iterable[StrPath] = ()
) -> list[str]:
    """The clang command line: bpf/Makefile's flags (less -Werror: a user sees warnings and gets an
    object), the user's -I directories ahead of bpfscope's (so a program may bring its own vmlinux.h),
    and the target architecture's asm/ headers last, as system headers."""
    arch = _arch(arch)
    headers = include_dir()
    if not (headers / arch / "vmlinux.h").is_file():
        raise BpfscopeError(errno.ENOENT, f"no vmlinux.h for {arch} in {headers / arch}")
    asm = asm_include_dir(arch)
    return [
        find_clang(), "-g", "-O2", "-target", "bpf", f"-D__TARGET_ARCH_{ARCHES[arch]}", "-Wall",
        *(f"-I{os.fspath(d)}" for d in include_dirs),
        f"-I{headers / arch}", f"-I{headers}",
        *(["-idirafter", os.fspath(asm)] if asm else []),
        "-c", os.fspath(source), "-o", os.fspath(output),
    ]


def compile_object(
    source: StrPath,
    output: StrPath | None = None,
    *,
    arch: str | None = None,
    include_dirs: Iterable[StrPath] = (),
) -> Path:
    """Compiles `source` into a BPF object for `arch` (default: this machine's) and returns its path,
    by default FILE.bpf.o beside FILE.bpf.c. Raises CompileError with clang's diagnostics; clang's
    warnings become a CompileWarning."""
    source_path = Path(source)
    if not source_path.is_file():
        raise BpfscopeError(errno.ENOENT, f"no such file: {source_path}")
    output_path = Path(output) if output is not None else _default_output(source_path)
    command = compile_command(source_path, output_path, arch=arch, include_dirs=include_dirs)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise CompileError(source_path, result.returncode, result.stderr, arch=_arch(arch))
    if result.stderr.strip():
        warnings.warn(result.stderr, CompileWarning, stacklevel=2)
    return output_path
