"""Which tools there are: every module of bpfscope.tools that defines `TOOL` (its Tool subclass). The
CLI, `doctor` and the agent read them from here; nothing else lists them.

`tool_names()` only reads file names and sources, so `bpfscope <tool>` imports the one tool it runs;
`tool_class(name)` imports one tool, `all_tools()` every tool."""

from __future__ import annotations

import errno
import importlib
import os
import re
from typing import TYPE_CHECKING, NamedTuple, Optional

if TYPE_CHECKING:
    from .._privileges import Capability
    from ._base import Tool

__all__ = ["ToolInfo", "all_tools", "legacy_tool", "tool_class", "tool_info", "tool_names"]

_PACKAGE = "bpfscope.tools"
_DEFINES_TOOL = re.compile(r"^TOOL\s*[:=]", re.MULTILINE)


class ToolInfo(NamedTuple):
    """What `doctor` and `bpfscope --help` show of a tool."""

    name: str
    help: str
    needs: tuple[tuple[str, ...], ...]  # doctor's row keys beyond CORE_NEEDS
    capabilities: tuple[Capability, ...]


# TEMPORARY (issue 16, step 2): the tools not yet on the Tool base, whose CLI is cli/<name>.py's
# add_arguments/run: help, needs, and "net" or "trace" capabilities. Each conversion deletes its entry;
# the table goes with the last one.
_LEGACY: dict[str, tuple[str, tuple[tuple[str, ...], ...], str]] = {}


def _converted() -> tuple[str, ...]:
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
    return sorted(set(_converted()) | set(_LEGACY))


def legacy_tool(name: str) -> Optional[ToolInfo]:
    """TEMPORARY: the entry of a tool not yet on the Tool base, else None."""
    if name in _converted() or name not in _LEGACY:
        return None
    from ._base import NET, TRACE

    help_text, needs, capabilities = _LEGACY[name]
    return ToolInfo(name, help_text, needs, NET if capabilities == "net" else TRACE)


def tool_class(name: str) -> type[Tool]:
    """The Tool subclass of tool `name` (importing its module only)."""
    from ..errors import BpfscopeError
    from ._base import Tool

    if name not in _converted():
        raise BpfscopeError(errno.ENOENT, f"no tool {name!r} on the Tool base (tools: {', '.join(tool_names())})")
    tool = getattr(importlib.import_module(f"{_PACKAGE}.{name}"), "TOOL", None)
    if not (isinstance(tool, type) and issubclass(tool, Tool) and tool.NAME == name):
        raise BpfscopeError(errno.EINVAL, f"{_PACKAGE}.{name}.TOOL must be a Tool subclass named {name!r}")
    return tool


def all_tools() -> list[type[Tool]]:
    """Every tool on the Tool base, by name."""
    return [tool_class(name) for name in _converted()]


def tool_info(name: str) -> ToolInfo:
    """What doctor and --help show of tool `name` (importing its module unless it is a legacy entry)."""
    legacy = legacy_tool(name)
    if legacy is not None:
        return legacy
    tool = tool_class(name)
    return ToolInfo(tool.NAME, tool.HELP, tool.NEEDS, tool.CAPABILITIES)
