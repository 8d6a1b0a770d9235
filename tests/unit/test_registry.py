"""The registry of tools and everything that reads it, without root: every registered tool is a
subcommand whose --help parses, is a row of `doctor`, and has a section in the agent's config;
tests/kernel/test_cli_registry.py runs them in `doctor` and the agent for real."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tool_runs import agent_section

import bpfscope.tools
from bpfscope.agent.config import parse_config
from bpfscope.cli import doctor
from bpfscope.tools import _base, _registry
from bpfscope.tools._base import Kind, Option, OptionValueError, Tool

BPFSCOPE = [sys.executable, "-m", "bpfscope"]
NAMES = _registry.tool_names()
# One name for one filter across the tools: the shared declaration's flag, short flag and parser.
SHARED = {o.name: o for o in (_base.PID, _base.COMM, _base.IFACE, _base.INTERVAL, _base.DURATION, _base.JSON,
                              _base.RING_BYTES)}


def test_the_registry_finds_the_tools_by_their_modules() -> None:
    folder = Path(bpfscope.tools.__file__).parent
    modules = {p.stem for p in folder.glob("*.py") if not p.stem.startswith("_")}
    assert {"packets", "opensnoop"} <= set(NAMES) <= modules
    assert "cidr" not in NAMES  # a helper module defines no TOOL
    assert NAMES == sorted(NAMES)


def test_tool_names_imports_no_tool() -> None:
    code = ("import sys; from bpfscope.tools import _registry as r; r.tool_names(); "
            "print(sorted(m for m in sys.modules if m.startswith('bpfscope.tools.') or m == 'numpy'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "['bpfscope.tools._registry']"


def test_an_unknown_tool_is_one_error() -> None:
    with pytest.raises(OSError, match="no tool 'nosuch'"):
        _registry.tool_class("nosuch")


@pytest.mark.parametrize("name", NAMES)
def test_each_tool_is_on_the_tool_base(name: str) -> None:
    tool = _registry.tool_class(name)
    assert issubclass(tool, Tool) and tool.NAME == name
    assert tool.HELP and "\n" not in tool.HELP
    assert isinstance(tool.KIND, Kind)
    assert tool.CAPABILITIES and tool.AGENT_KEY
    for group in tool.NEEDS:
        assert group and all(key in doctor._FIXES for key in group), group  # rows doctor shows, each with a fix
    names = [o.name for o in tool.OPTIONS]
    assert len(set(names)) == len(names)
    shorts = [o.short for o in tool.OPTIONS if o.short]
    assert len(set(shorts)) == len(shorts)
    for option in tool.OPTIONS:
        shared = SHARED.get(option.name)
        if shared is not None:
            assert (option.short, option.parse) == (shared.short, shared.parse), option
        if option.name in ("interval", "duration", "json"):
            assert not option.agent, option  # the runner's, never the agent's
        if option.required and option.name != "iface":
            assert option.example is not None, option  # what the registry's tests run it with
    assert _registry.tool_info(name) == (name, tool.HELP, tool.NEEDS, tool.CAPABILITIES)
    assert _registry.all_tools().count(tool) == 1


def test_help_lists_every_tool() -> None:
    out = subprocess.run([*BPFSCOPE, "--help"], capture_output=True, text=True, check=True).stdout
    for name in NAMES:
        assert f"    {name} " in out, name


@pytest.mark.parametrize("name", NAMES)
def test_each_tools_help_parses(name: str) -> None:
    result = subprocess.run([*BPFSCOPE, name, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.startswith(f"usage: bpfscope {name} ")
    info = _registry.tool_info(name)
    assert " ".join(info.help.split()) in " ".join(result.stdout.split())
    for option in _registry.tool_class(name).OPTIONS:
        assert (option.shown in result.stdout) is (option.cli and not option.hidden), option.shown
        assert not any(alias in result.stdout for alias in option.aliases), option.aliases


@pytest.mark.parametrize("name", NAMES)
def test_each_tool_is_a_doctor_row(name: str) -> None:
    (row,) = [t for t in doctor.TOOLS if t.name == name]
    info = _registry.tool_info(name)
    assert row.needs == _base.CORE_NEEDS + info.needs and row.capabilities == info.capabilities


@pytest.mark.parametrize("name", NAMES)
def test_each_tool_has_a_section_in_the_agents_config(name: str) -> None:
    tool = _registry.tool_class(name)
    assert tool.AGENT_KEY
    config = parse_config({"tools": {tool.AGENT_KEY: agent_section(tool, "lo")}})
    (tool_config,) = config.tools
    assert (tool_config.name, tool_config.key, len(tool_config.instances)) == (name, tool.AGENT_KEY, 1)
    assert tool_config.on == (("lo",) if tool.declares("iface") else ())
    assert set(tool_config.values) == {o.name for o in tool.OPTIONS}
    from bpfscope.agent.agent import build_sources
    from bpfscope.agent.sources import ToolSource

    sources = build_sources(config, None)
    assert [type(s) for s in sources] == [ToolSource] and sources[0].name == tool.AGENT_KEY


def test_agent_options_are_read_through_the_declarations() -> None:
    config = parse_config({"tools": {"opens": {"comm": "nginx", "failed": True}}})
    assert config.tool("opensnoop").values["comm"] == "nginx"  # type: ignore[union-attr]
    for section, field in (({"comm": "a-name-longer-than-15"}, "tools.opens.comm"), ({"pid": 0}, "tools.opens.pid"),
                           ({"count": False}, "tools.opens"), ({"failed": "yes"}, "tools.opens.failed")):
        with pytest.raises(OSError, match=field):
            parse_config({"tools": {"opens": section}})


def test_a_tool_that_runs_several_times_has_a_list_of_instances() -> None:
    from bpfscope.agent.agent import build_sources

    functions = [{"function": "libc:free"}, {"function": "libc:malloc", "pid": 1}]
    config = parse_config({"tools": {"funclatency": functions}})
    (tool_config,) = config.tools
    assert [(i.name, i.values["pid"]) for i in tool_config.instances] == [("libc:free", None), ("libc:malloc", 1)]
    # one pin directory each, named by what tells them apart (bpffs takes no ":" or ".")
    assert [Path(s.pin_dir).name for s in build_sources(config, None)] == ["funclatency-libc_free",
                                                                            "funclatency-libc_malloc"]
    for section, field in (([{"function": "libc:free"}, {"function": "libc:free", "pid": 1}],
                            r"tools.funclatency\[1\]: the same function as funclatency\[0\]"),
                           ([{"pid": 1}], r"tools.funclatency\[0\].function: is required"),
                           ({"function": "libc"}, r"tools.funclatency\[0\].function: 'libc' is not TARGET:SYMBOL")):
        with pytest.raises(OSError, match=field):
            parse_config({"tools": {"funclatency": section}})
    assert parse_config({"tools": {"funclatency": [], "opens": {}}}).tool("funclatency") is None


def test_option_from_config_checks_as_the_cli_does() -> None:
    assert _base.PID.from_config(42) == 42 and _base.DURATION.from_config(0.5) == 0.5
    mode = _base.XDP_MODE
    assert mode.from_config("generic") == "generic"
    for option, value in ((_base.PID, "x"), (_base.PID, True), (mode, "turbo"), (Option("on", "a flag"), 1)):
        with pytest.raises(OptionValueError):
            option.from_config(value)
