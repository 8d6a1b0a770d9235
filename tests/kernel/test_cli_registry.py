"""Every registered tool, run for real: a row of `bpfscope doctor --json`, a short run of `bpfscope <tool>
--json` whose final record has `lost` and `missed`, and a source of the agent that exports its
`bpfscope_tool_lost_events_total` and `bpfscope_tool_missed_runs_total`. A tool that takes an interface
runs on a veth of the test's own (tests/unit/test_registry.py checks the rest without root)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tool_runs import agent_section, cli_args

from bpfscope.agent.agent import Agent
from bpfscope.agent.config import parse_config
from bpfscope.testing.netns import VethPair
from bpfscope.tools import _registry

BPFSCOPE = [sys.executable, "-m", "bpfscope"]
NAMES = _registry.tool_names()


@pytest.fixture(scope="module")
def doctor_tools() -> dict[str, Any]:
    result = subprocess.run([*BPFSCOPE, "doctor", "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout)["tools"])


@pytest.mark.parametrize("name", NAMES)
def test_each_tool_is_in_doctors_report(name: str, doctor_tools: dict[str, Any]) -> None:
    row = doctor_tools[name]
    assert row["ok"] is True and row["fix"] is None, row
    assert set(doctor_tools) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_each_tool_runs_from_the_cli_and_says_what_it_could_not_see(name: str, veth_pair: VethPair) -> None:
    tool = _registry.tool_class(name)
    result = subprocess.run([*BPFSCOPE, name, *cli_args(tool, veth_pair.host), "--json", "--duration", "0.5"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    final = json.loads(result.stdout.splitlines()[-1])
    assert final["final"] is True and final["lost"] >= 0 and final["missed"] >= 0
    assert isinstance(final["time"], float) and final["seconds"] >= 0.5
    assert " lost" in result.stderr.splitlines()[-1]  # the summary line


@pytest.mark.parametrize("name", NAMES)
def test_each_tool_runs_in_the_agent_with_lost_and_missed(name: str, veth_pair: VethPair, bpffs_dir: Path) -> None:
    tool = _registry.tool_class(name)
    assert tool.AGENT_KEY, f"{name} has no section in the agent's config"
    section = agent_section(tool, veth_pair.host)
    config = parse_config({"pin_dir": str(bpffs_dir / "agent"), "containers": False,
                           "tools": {tool.AGENT_KEY: section}})
    agent = Agent(config)
    agent.start()
    try:
        families = {family.name: family for family in agent.registry.collect()}
    finally:
        agent.stop()
    for family in ("bpfscope_tool_lost_events", "bpfscope_tool_missed_runs"):
        samples = [s for s in families[family].samples if s.labels["tool"] == tool.AGENT_KEY]
        assert len(samples) == 1 and samples[0].value >= 0, (family, families[family].samples)
    own = set(families) - {"bpfscope_agent_info", "bpfscope_tool_lost_events", "bpfscope_tool_missed_runs",
                           "bpfscope_ringbuf_lost_events", "bpfscope_ringbuf_received_events"}
    assert own, f"{name} exports nothing of its own"
