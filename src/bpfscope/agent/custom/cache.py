"""Custom programs given as C, compiled once into a cache and again only when something that goes into
the object changes."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Optional

from ... import build
from ...errors import BpfscopeError

__all__ = ["basename", "build_cached"]

_DEFAULT_CACHE = "/var/cache/bpfscope/custom"


def basename(path: Path) -> str:
    """The name a program goes by: its file's, without .bpf.c or .bpf.o."""
    return path.name.removesuffix(".c").removesuffix(".o").removesuffix(".bpf")


def _cache_dir() -> Path:
    """/var/cache/bpfscope/custom for root, else a directory of this user's under /tmp."""
    for candidate in (Path(_DEFAULT_CACHE), Path(tempfile.gettempdir()) / f"bpfscope-custom-{os.getuid()}"):
        with contextlib.suppress(OSError):
            candidate.mkdir(parents=True, exist_ok=True)
            if os.access(candidate, os.W_OK):
                return candidate
    raise BpfscopeError(errno.EACCES, f"no writable directory to build custom programs in (tried {_DEFAULT_CACHE})")


def build_cached(source: Path, cache_dir: Optional[Path] = None) -> Path:
    """The object of `source`, compiled once into the cache and compiled again only when the source,
    the headers beside it, bpfscope's headers or the compile command change."""
    directory = cache_dir or _cache_dir()
    digest = hashlib.sha256("\0".join(build.compile_command(source, "-")).encode())
    digest.update(source.read_bytes())
    for header in sorted([*source.parent.glob("*.h"), *build.include_dir().rglob("*.h")]):
        stat = header.stat()
        digest.update(f"{header}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    output = directory / f"{basename(source)}-{digest.hexdigest()[:16]}.bpf.o"
    if output.is_file():
        return output
    directory.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=directory, prefix=f".{output.name}.", suffix=".tmp")
    os.close(fd)
    try:
        build.compile_object(source, partial)
        os.replace(partial, output)  # whole or not at all, should two agents build at once
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
    return output
