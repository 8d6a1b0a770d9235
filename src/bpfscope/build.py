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
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from .errors import BpfscopeError, NotSupportedError

__all__ = [
    "ARCHES", "CompileError", "CompileWarning", "LibbpfHeaders", "asm_include_dir", "compile_command", "compile_object",
    "find_clang", "include_dir", "libbpf_headers",
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
# libbpf's BPF-side headers: a wheel's copy (the build machine's libbpf-dev), else the system's, in the order
# clang searches its system directories.
_PACKAGED_LIBBPF = _PACKAGE_INCLUDE / "libbpf"
_SYSTEM_INCLUDES = (Path("/usr/local/include"), Path("/usr/include"))
_LIBBPF_VERSION = re.compile(r"^#define LIBBPF_(MAJOR|MINOR)_VERSION (\d+)$", re.MULTILINE)
# Names libbpf's headers gained after 1.1, and the version that brought each: the one line a program that
# uses one gets when the headers in use are older. (bpfscope.bpf.h defines BPF_UPROBE/BPF_URETPROBE itself.)
_NEWER_LIBBPF_NAMES = {
    **dict.fromkeys(("bpf_for", "bpf_for_each", "bpf_repeat", "bpf_ksym_exists", "__kptr_untrusted",
                     "PT_REGS_PARM6", "PT_REGS_PARM7", "PT_REGS_PARM8"), (1, 2)),
    "__percpu_kptr": (1, 3),
    **dict.fromkeys(("bpf_core_cast", "BPF_CORE_WRITE_BITFIELD", "__arg_ctx", "__arg_nonnull", "__arg_nullable",
                     "__arg_trusted", "__arg_arena"), (1, 4)),
    "__uptr": (1, 5),
}
_NAMED_IN_DIAGNOSTIC = re.compile(r"'([A-Za-z_][A-Za-z0-9_]*)'")


class CompileError(BpfscopeError):
    """clang rejected the program; `diagnostics` is everything it printed."""

    def __init__(
        self,
        source: Path,
        returncode: int,
        diagnostics: str,
        *,
        arch: str | None = None,
        libbpf: tuple[int, int] | None = None,
    ) -> None:
        message = f"clang could not compile {source} (exit {returncode})"
        newer = _newer_libbpf_name(diagnostics, libbpf)
        if newer and libbpf:
            name, since = newer
            message += f"; {name} needs libbpf {since[0]}.{since[1]}'s headers, these are {libbpf_text(libbpf)}'s"
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


def libbpf_text(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def _newer_libbpf_name(diagnostics: str, libbpf: tuple[int, int] | None) -> tuple[str, tuple[int, int]] | None:
    """The first name clang did not know that a newer libbpf's headers have, and that version."""
    if libbpf is None:
        return None
    for name in _NAMED_IN_DIAGNOSTIC.findall(diagnostics):
        since = _NEWER_LIBBPF_NAMES.get(name)
        if since and since > libbpf:
            return name, since
    return None


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


@dataclass(frozen=True)
class LibbpfHeaders:
    """libbpf's BPF-side headers that a compile uses: `directory` holds bpf/bpf_helpers.h."""

    directory: Path
    version: tuple[int, int]
    packaged: bool  # a wheel's copy, which needs its own -I; the system's are clang's default

    def __str__(self) -> str:
        return f"libbpf {libbpf_text(self.version)}'s headers in {self.directory / 'bpf'}"


def _headers_at(directory: Path, *, packaged: bool) -> LibbpfHeaders | None:
    try:
        text = (directory / "bpf" / "libbpf_version.h").read_text()
    except OSError:
        return None
    numbers = dict(_LIBBPF_VERSION.findall(text))
    if not (directory / "bpf" / "bpf_helpers.h").is_file() or set(numbers) != {"MAJOR", "MINOR"}:
        return None
    return LibbpfHeaders(directory, (int(numbers["MAJOR"]), int(numbers["MINOR"])), packaged)


def loaded_libbpf() -> tuple[int, int] | None:
    """The version of the libbpf bpfscope loads, None where there is none (a compile for another machine
    needs no library)."""
    try:
        from . import _libbpf
    except NotSupportedError:
        return None
    return _libbpf.version()


def libbpf_headers(library: tuple[int, int] | None = None) -> LibbpfHeaders:
    """The libbpf headers to compile against: those of `library`'s version (default: the libbpf bpfscope
    loads), else the newest older ones, since an object built against older headers loads with a newer
    libbpf, while newer headers offer what the library may not load. Raises where only newer ones exist."""
    library = library or loaded_libbpf()
    system = next(filter(None, (_headers_at(d, packaged=False) for d in _SYSTEM_INCLUDES)), None)
    found = [h for h in (_headers_at(_PACKAGED_LIBBPF, packaged=True), system) if h is not None]
    if not found:
        raise BpfscopeError(
            errno.ENOENT, "libbpf's headers are missing: install them (Debian: apt-get install libbpf-dev)"
        )
    if library is None:
        return found[0]
    usable = [h for h in found if h.version <= library]
    if not usable:
        raise NotSupportedError(
            "libbpf headers", f"{', '.join(map(str, found))}: newer than the libbpf bpfscope loads "
            f"({libbpf_text(library)}); install the libbpf-dev that matches it, or a newer libbpf"
        )
    return max(usable, key=lambda h: h.version)  # max keeps the first of equals: a wheel's copy


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
    libbpf's headers matched to the loaded libbpf (libbpf_headers), and the target architecture's asm/
    headers last, as system headers."""
    arch = _arch(arch)
    headers = include_dir()
    if not (headers / arch / "vmlinux.h").is_file():
        raise BpfscopeError(errno.ENOENT, f"no vmlinux.h for {arch} in {headers / arch}")
    asm = asm_include_dir(arch)
    libbpf = libbpf_headers()
    return [
        find_clang(), "-g", "-O2", "-target", "bpf", f"-D__TARGET_ARCH_{ARCHES[arch]}", "-Wall",
        *(f"-I{os.fspath(d)}" for d in include_dirs),
        f"-I{headers / arch}", f"-I{headers}",
        *([f"-I{libbpf.directory}"] if libbpf.packaged else []),
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
        raise CompileError(
            source_path, result.returncode, result.stderr, arch=_arch(arch), libbpf=libbpf_headers().version
        )
    if result.stderr.strip():
        warnings.warn(result.stderr, CompileWarning, stacklevel=2)
    return output_path
