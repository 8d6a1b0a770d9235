"""Which tools there are: every module of bpfscope.tools that defines `TOOL` (its Tool subclass). The
CLI, `doctor` and the agent read them from here; nothing else lists them.

`tool_names()` only reads file names and sources, so `bpfscope <tool>` imports the one tool it runs;
`tool_class(name)` imports one tool, `all_tools()` every tool."""

from __future__ import annotations

import errno
import importlib
import os
import re
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from .._privileges import Capability
    from ._base import Tool

__all__ = ["ToolInfo", "all_tools", "tool_class", "tool_info", "tool_names"]

_PACKAGE = "bpfscope.tools"
_DEFINES_TOOL = re.compile(r"^TOOL\s*[:=]", re.MULTILINE)


class ToolInfo(NamedTuple):
    """What `doctor` and `bpfscope --help` show of a tool."""

    name: str
    help: str
    needs: tuple[tuple[str, ...], ...]  # doctor's row keys beyond CORE_NEEDS
    capabilities: tuple[Capability, ...]


def _tool_modules() -> tuple[str, ...]:
    """Modules of bpfscope.tools that define TOOL, found without importing any."""
    # The folder's listing, not pkgutil.iter_modules: that imports inspect, a fifth of the start-up.
    (folder,) = importlib.import_module(_PACKAGE).__path__
    names = []
    for entry in os.scandir(folder):
        name = entry.name.removesuffix(".py")
        if name == entry.name or name.startswith("_") or not entry.is_file():
            continue
        with open(entry.path, encoding="utf-8") as f:
            if _DEFINES_TOOL.search(f.read()):
                names.append(name)
    return tuple(sorted(names))


def tool_names() -> list[str]:
    """Every tool's name, sorted; imports no tool."""
    return list(_tool_modules())


def tool_class(name: str) -> type[Tool]:
    """The Tool subclass of tool `name` (importing its module only)."""
    from ..errors import BpfscopeError
    from ._base import Tool

    if name not in _tool_modules():
        raise BpfscopeError(errno.ENOENT, f"no tool {name!r} (tools: {', '.join(tool_names())})")
    tool = getattr(importlib.import_module(f"{_PACKAGE}.{name}"), "TOOL", None)
    if not (isinstance(tool, type) and issubclass(tool, Tool) and tool.NAME == name):
        raise BpfscopeError(errno.EINVAL, f"{_PACKAGE}.{name}.TOOL must be a Tool subclass named {name!r}")
    return tool


def all_tools() -> list[type[Tool]]:
    """Every tool, by name."""
    return [tool_class(name) for name in _tool_modules()]


def tool_info(name: str) -> ToolInfo:
    """What doctor and --help show of tool `name` (importing its module)."""
    tool = tool_class(name)
    return ToolInfo(tool.NAME, tool.HELP, tool.NEEDS, tool.CAPABILITIES)
