"""The architectures bpfscope runs on: those it ships BPF objects, vmlinux.h and syscall numbers for (bpf/Makefile's
ARCHES, the wheel's platform tags). Standard library only, as _uapi, which reads it at import."""

from __future__ import annotations

import platform

from .errors import UnsupportedArchitectureError

__all__ = ["ARCHES", "machine"]

ARCHES = ("x86_64", "aarch64")


def machine() -> str:
    """This machine's architecture as uname -m names it, if bpfscope runs on it; one line saying it does not
    otherwise (UnsupportedArchitectureError)."""
    arch = platform.machine()
    if arch not in ARCHES:
        raise UnsupportedArchitectureError(arch, ARCHES)
    return arch
