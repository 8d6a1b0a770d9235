"""Wheel build hook: compile the BPF objects for the wheel's architecture and put them in the wheel with the
headers `bpfscope build` compiles users' programs against, so installing the wheel needs no compiler.

The objects are of one architecture, so the wheel's platform tag names it: py3-none-manylinux_2_17_<arch> (and
its older name manylinux2014_<arch>). The wheel has no native code of its own (it loads the system's libbpf),
so it asks for no newer glibc than any manylinux wheel of that architecture may. BPFSCOPE_WHEEL_ARCH=x86_64 or
aarch64 chooses the architecture, by default the build machine's; `make wheel` builds both."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

WHEEL_ARCH_ENV = "BPFSCOPE_WHEEL_ARCH"
ARCHES = ("x86_64", "aarch64")  # bpf/Makefile's ARCHES, bpfscope._arch.ARCHES


def platform_tag(arch: str) -> str:
    return f"manylinux_2_17_{arch}.manylinux2014_{arch}"


class BpfObjectsHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return  # an editable install loads objects and headers from the source tree
        arch = os.environ.get(WHEEL_ARCH_ENV) or platform.machine()
        if arch not in ARCHES:
            raise ValueError(f"no bpfscope wheel for {arch}: set {WHEEL_ARCH_ENV} to one of {', '.join(ARCHES)}")
        root = Path(self.root)
        # make is incremental (clang -MD), so an up-to-date tree costs nothing and a stale object never ships.
        subprocess.run(["make", "-C", str(root / "bpf"), f"ARCH={arch}"], check=True)
        # _bpf/ is git-ignored, and hatchling leaves ignored files out unless told.
        for obj in sorted((root / "src" / "bpfscope" / "_bpf" / arch).glob("*.bpf.o")):
            build_data["force_include"][str(obj)] = f"bpfscope/_bpf/{arch}/{obj.name}"
        build_data["tag"] = f"py3-none-{platform_tag(arch)}"
        build_data["pure_python"] = False
        # One copy of the headers lives in bpf/include, every architecture's vmlinux.h with it (`bpfscope build
        # --arch`); bpfscope.build finds this one in an installed wheel.
        build_data["force_include"][str(root / "bpf" / "include")] = "bpfscope/include"
        # libbpf's BPF-side headers (LGPL-2.1 OR BSD-2-Clause) too, so a user's program compiles with clang
        # alone: bpfscope.bpf.h includes <bpf/bpf_helpers.h> and friends. In a directory of their own, with their
        # version, so that bpfscope.build uses them only where they suit the libbpf it loads.
        for header in LIBBPF_HEADERS:
            build_data["force_include"][f"/usr/include/bpf/{header}"] = f"bpfscope/include/libbpf/bpf/{header}"


LIBBPF_HEADERS = ("bpf_helpers.h", "bpf_helper_defs.h", "bpf_tracing.h", "bpf_core_read.h", "bpf_endian.h",
                  "usdt.bpf.h", "libbpf_version.h")
