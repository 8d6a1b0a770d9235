"""Wheel build hook: compile the BPF objects and put them in the wheel, so installing it needs no compiler."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class BpfObjectsHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return  # an editable install loads the objects from the source tree
        root = Path(self.root)
        built = root / "src" / "bpfscope" / "_bpf"
        if not list(built.glob(f"{platform.machine()}/*.bpf.o")):
            subprocess.run(["make", "-C", str(root / "bpf")], check=True)
        # _bpf/ is git-ignored, and hatchling leaves ignored files out unless told.
        for obj in sorted(built.glob("*/*.bpf.o")):
            build_data["force_include"][str(obj)] = f"bpfscope/_bpf/{obj.parent.name}/{obj.name}"
