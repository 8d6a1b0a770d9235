"""What the registry's tests run a tool with: an interface of the test's own where it takes one, and the
example of each option it cannot run without (Option.required, Option.example)."""

from __future__ import annotations

from typing import Any

from bpfscope.tools._base import Tool


def cli_args(tool: type[Tool], iface: str) -> list[str]:
    """Arguments of `bpfscope <tool>` that let it run."""
    given = ["--iface", iface] if tool.declares("iface") else []
    for option in tool.OPTIONS:
        if option.required and option.name != "iface":
            assert option.example is not None, option
            given += [option.example] if option.positional else [option.flag, option.example]
    return given


def agent_section(tool: type[Tool], iface: str) -> dict[str, Any]:
    """A section of the agent's config that runs `tool`."""
    section: dict[str, Any] = {"interfaces": [iface]} if tool.per_interface() else {}
    for option in tool.OPTIONS:
        if option.agent and option.required:
            section[option.key] = iface if option.name == "iface" else option.example
    return section
