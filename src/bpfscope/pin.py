"""The bpffs layout: bpfscope pins live under /sys/fs/bpf/bpfscope/<tool>/."""

from __future__ import annotations

import os
import shutil

from .mounts import ensure_bpffs

__all__ = ["BPFFS", "PIN_ROOT", "tool_pin_dir", "ensure_pin_dir", "remove_pins"]

BPFFS = "/sys/fs/bpf"
PIN_ROOT = os.path.join(BPFFS, "bpfscope")


def tool_pin_dir(tool: str) -> str:
    """Where a tool pins its maps and links while it runs."""
    return os.path.join(PIN_ROOT, tool)


def ensure_pin_dir(path: str) -> None:
    """Mounts bpffs if the machine has none yet and creates the pin's parent directory."""
    ensure_bpffs(BPFFS)
    os.makedirs(os.path.dirname(path), exist_ok=True)


def remove_pins(directory: str) -> None:
    """Unpins everything under `directory` (a pinned link detaches when its last reference goes),
    and the bpfscope root too once nothing of bpfscope's is pinned."""
    if os.path.isdir(directory):
        shutil.rmtree(directory)
    try:
        os.rmdir(PIN_ROOT)
    except OSError:
        pass  # missing, or another tool still has pins there
