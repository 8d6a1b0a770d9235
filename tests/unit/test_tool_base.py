"""The Tool base without a kernel: what it closes and in what order, a failed open, and the options it
checks before anything loads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional

import pytest

from bpfscope.errors import InterfaceNotFoundError
from bpfscope.mounts import cgroup2_path
from bpfscope.tools._base import COMM, IFACE, Kind, Option, OptionValueError, Tool, cgroup_id, resolve_iface


class _Part:
    def __init__(self, name: str, closed: list[str], error: bool = False) -> None:
        self.name, self.closed, self.error = name, closed, error

    def close(self) -> None:
        self.closed.append(self.name)
        if self.error:
            raise OSError(19, "no such device")


class _Tool(Tool):
    NAME, HELP, NEEDS, CAPABILITIES, KIND = "fake", "a stand-in", (), (), Kind.POLLING
    OPTIONS = (IFACE,)

    def __init__(self, closed: list[str], *, fail: bool = False, iface: Optional[str] = None) -> None:
        super().__init__()
        self.closed, self.fail, self.iface = closed, fail, iface

    @classmethod
    def _from_options(cls, values: Mapping[str, Any], pin_dir: Optional[str]) -> _Tool:
        return cls([], iface=values["iface"])

    def _open(self) -> None:
        # Stand-ins that only record their close: the order is what is tested, not the kernel.
        self._obj = _Part("object", self.closed)  # type: ignore[assignment]
        self.attach(_Part("link 1", self.closed, error=True))  # type: ignore[type-var]
        self.attach(_Part("link 2", self.closed))  # type: ignore[type-var]
        self.ring(_Part("ring", self.closed))  # type: ignore[arg-type]
        if self.fail:
            raise OSError(22, "the attach failed")


def test_close_goes_links_then_rings_then_the_object_once() -> None:
    closed: list[str] = []
    with _Tool(closed) as tool:
        assert len(tool.links) == 2 and len(tool.rings) == 1
    assert closed == ["link 1", "link 2", "ring", "object"]  # a link that fails does not stop the rest
    tool.close()
    assert closed == ["link 1", "link 2", "ring", "object"] and tool.links == () and tool.rings == ()
    with pytest.raises(AssertionError, match="open"):
        _ = tool.obj


def test_a_failed_open_leaves_nothing() -> None:
    closed: list[str] = []
    tool = _Tool(closed, fail=True)
    with pytest.raises(OSError, match="the attach failed"):
        tool.open()
    assert closed == ["link 1", "link 2", "ring", "object"]


def test_an_unknown_interface_stops_before_the_tool_is_built() -> None:
    with pytest.raises(InterfaceNotFoundError, match="no interface 'nosuch0'; interfaces here: .*lo"):
        _Tool.from_options({"iface": "nosuch0"})
    assert _Tool.from_options({"iface": "lo"}).iface == resolve_iface("lo") == "lo"
    assert _Tool.declares("iface") and not _Tool.declares("pid")


def test_a_flag_on_by_default_is_turned_off_with_no_and_an_agent_only_option_is_no_flag() -> None:
    import argparse

    from bpfscope.cli._runner import add_arguments

    class Flags(_Tool):
        OPTIONS = (Option("tls", "plain only", default=True), Option("failed", "failures only"),
                   Option("max_routes", "routes kept", int, default=100, cli=False))

    assert [o.flag for o in Flags.OPTIONS] == ["--no-tls", "--failed", "--max-routes"]
    parser = argparse.ArgumentParser()
    add_arguments(parser, Flags)
    assert vars(parser.parse_args([])) == {"tls": True, "failed": False}
    assert vars(parser.parse_args(["--no-tls", "--failed"])) == {"tls": False, "failed": True}
    assert Flags.OPTIONS[0].from_config(False) is False


class _Limiter(_Tool):
    OPTIONS = (IFACE, Option("rate", "packets per second", int, required=True, example="10"),
               Option("allow", "a network let through", str, many=True, default=()))
    values: dict[str, Any] = {}

    @classmethod
    def _from_options(cls, values: Mapping[str, Any], pin_dir: Optional[str]) -> _Limiter:
        tool = cls([], iface=values["iface"])
        tool.values = dict(values)
        return tool


def test_a_required_option_is_asked_for_and_a_repeated_one_is_a_tuple() -> None:
    with pytest.raises(OSError, match="give --rate: packets per second"):
        _Limiter.from_options({"iface": "lo"})
    assert _Limiter.from_options({"iface": "lo", "rate": 5}).values == {"iface": "lo", "rate": 5, "allow": ()}
    assert _Limiter.from_options({"iface": "lo", "rate": 5, "allow": ["a", "b"]}).values["allow"] == ("a", "b")
    allow = _Limiter.OPTIONS[2]
    assert allow.from_config(["a", "b"]) == ("a", "b") and allow.from_config("a") == ("a",)
    assert _Limiter.per_interface() and IFACE.but(config_name="interface").key == "interface"


def test_an_old_flag_still_works_and_is_not_shown() -> None:
    import argparse

    from bpfscope.cli._runner import add_arguments

    class Renamed(_Tool):
        OPTIONS = (COMM.but(aliases=("--name",)),)

    parser = argparse.ArgumentParser()
    add_arguments(parser, Renamed)
    assert parser.parse_args([]).comm is None
    assert parser.parse_args(["--name", "curl"]).comm == parser.parse_args(["-c", "curl"]).comm == "curl"
    assert "--name" not in parser.format_help() and "--comm" in parser.format_help()


def test_a_cgroup_is_given_by_its_path_and_becomes_its_id() -> None:
    root = cgroup2_path()
    if root is None:
        pytest.skip("no cgroup v2 file system is mounted")
    own = next(line[3:] for line in Path("/proc/self/cgroup").read_text().splitlines() if line.startswith("0::"))
    assert cgroup_id(root) == cgroup_id("/") == os.stat(root).st_ino
    assert cgroup_id(own) == cgroup_id(root + own) == os.stat(root + own).st_ino
    with pytest.raises(OptionValueError, match="/nonexistent/cg: no such directory"):
        cgroup_id("/nonexistent/cg")
    with pytest.raises(OptionValueError, match=f"/tmp: not a cgroup v2 directory \\(under {root}\\)"):
        cgroup_id("/tmp")
