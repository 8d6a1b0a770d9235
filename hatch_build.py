"""Wheel build hook: compile the BPF objects for every architecture bpfscope targets and put them in the
wheel with the headers `bpfscope build` compiles users' programs against, so installing the wheel needs
no compiler and the wheel stays py3-none-any."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class BpfObjectsHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return  # an editable install loads objects and headers from the source tree
        root = Path(self.root)
        # make is incremental (clang -MD), so an up-to-date tree costs nothing and a stale object never ships.
        # bpf/Makefile's ARCHES lists the architectures; each has bpf/include/<arch>/vmlinux.h.
        subprocess.run(["make", "-C", str(root / "bpf"), "all-arches"], check=True)
        built = root / "src" / "bpfscope" / "_bpf"
        # _bpf/ is git-ignored, and hatchling leaves ignored files out unless told.
        for obj in sorted(built.glob("*/*.bpf.o")):
            build_data["force_include"][str(obj)] = f"bpfscope/_bpf/{obj.parent.name}/{obj.name}"
        # One copy of the headers lives in bpf/include; bpfscope.build finds this one in an installed wheel.
        build_data["force_include"][str(root / "bpf" / "include")] = "bpfscope/include"
        # libbpf's BPF-side headers (LGPL-2.1 OR BSD-2-Clause) too, so a user's program compiles with clang
        # alone: bpfscope.bpf.h includes <bpf/bpf_helpers.h> and friends. In a directory of their own, with their
        # version, so that bpfscope.build uses them only where they suit the libbpf it loads.
        for header in LIBBPF_HEADERS:
            build_data["force_include"][f"/usr/include/bpf/{header}"] = f"bpfscope/include/libbpf/bpf/{header}"


LIBBPF_HEADERS = ("bpf_helpers.h", "bpf_helper_defs.h", "bpf_tracing.h", "bpf_core_read.h", "bpf_endian.h",
                  "usdt.bpf.h", "libbpf_version.h")
