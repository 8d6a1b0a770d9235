"""What doctor reads from /proc and /sys, parsed without root; and its verdicts from given rows."""

from __future__ import annotations

import io

import pytest

from bpfscope.cli.doctor import TOOLS, Report, Row, Tool, evaluate_tool, parse_lockdown, render
from bpfscope.features import Capability, missing_capabilities, parse_capabilities, parse_kernel_config
from bpfscope.mounts import Mount, parse_mounts

ALL = frozenset(Capability)


def test_capabilities_of_root_without_sys_resource() -> None:
    # CapEff of root on the CI machines: everything but CAP_SYS_RESOURCE (bit 24)
    caps = parse_capabilities("000001fffeffffff")
    assert caps == ALL - {Capability.SYS_RESOURCE}


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        ("0000000000000000", set()),
        ("0000008000000000", {Capability.BPF}),
        ("000000c000001000", {Capability.BPF, Capability.PERFMON, Capability.NET_ADMIN}),
        ("0000000000200000", {Capability.SYS_ADMIN}),
        ("000000c000201000\n", ALL - {Capability.SYS_RESOURCE}),
    ],
)
def test_capability_masks(mask: str, expected: set[Capability]) -> None:
    assert parse_capabilities(mask.strip()) == expected


def test_sys_admin_stands_in_for_bpf_and_perfmon_only() -> None:
    needed = (Capability.BPF, Capability.PERFMON, Capability.NET_ADMIN)
    assert missing_capabilities(needed, frozenset({Capability.SYS_ADMIN})) == [Capability.NET_ADMIN]
    assert missing_capabilities(needed, frozenset({Capability.BPF})) == [
        Capability.PERFMON,
        Capability.NET_ADMIN,
    ]
    assert missing_capabilities(needed, ALL) == []


def test_capability_labels() -> None:
    assert Capability.BPF.label == "CAP_BPF"
    assert int(Capability.PERFMON) == 38


def test_kernel_config() -> None:
    config = parse_kernel_config(
        "#\n# Automatically generated file\nCONFIG_BPF_JIT=y\n# CONFIG_KPROBES is not set\n"
        'CONFIG_LOCALVERSION="-fc"\nCONFIG_NET_CLS_BPF=m\n\n'
    )
    assert config == {
        "CONFIG_BPF_JIT": "y",
        "CONFIG_KPROBES": "n",
        "CONFIG_LOCALVERSION": "-fc",
        "CONFIG_NET_CLS_BPF": "m",
    }


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        ("[none] integrity confidentiality\n", "none"),
        ("none [integrity] confidentiality", "integrity"),
        ("none integrity [confidentiality]\n", "confidentiality"),
    ],
)
def test_lockdown(text: str, mode: str) -> None:
    assert parse_lockdown(text) == mode


def test_mounts_unescape_octal() -> None:
    text = (
        "sysfs /sys sysfs rw,nosuid 0 0\n"
        "bpf /sys/fs/bpf bpf rw,relatime,mode=700 0 0\n"
        "nodev /tmp/with\\040space tracefs rw 0 0\n"
    )
    assert parse_mounts(text) == [
        Mount("sysfs", "/sys", "sysfs"),
        Mount("bpf", "/sys/fs/bpf", "bpf"),
        Mount("nodev", "/tmp/with space", "tracefs"),
    ]


def _rows(**ok: bool) -> dict[str, Row]:
    keys = ["btf", "bpf_syscall", "xdp_link", "tcx", "clsact", "tracepoints", "tracefs", "ringbuf", "uprobes"]
    return {k: Row(k, k.replace("_", " "), ok.get(k, True), fix=f"fix {k}") for k in keys}


def _tool(name: str) -> Tool:
    return next(t for t in TOOLS if t.name == name)


def test_tool_runs_when_everything_is_there() -> None:
    row = evaluate_tool(_tool("packets"), _rows(), ALL)
    assert row.ok and row.fix == ""
    assert "xdp link" in row.detail


def test_tool_takes_either_alternative() -> None:
    flows = _tool("flows")
    assert evaluate_tool(flows, _rows(tcx=False), ALL).ok
    row = evaluate_tool(flows, _rows(tcx=False, clsact=False), ALL)
    assert not row.ok
    assert "tcx or clsact" in row.detail
    assert row.fix == "fix tcx"


def test_missing_feature_gives_its_fix() -> None:
    row = evaluate_tool(_tool("funclatency"), _rows(uprobes=False), ALL)
    assert not row.ok and row.fix == "fix uprobes"


def test_missing_capability_comes_first() -> None:
    row = evaluate_tool(_tool("packets"), _rows(xdp_link=False), frozenset({Capability.BPF}))
    assert not row.ok
    assert "xdp link" in row.detail and "CAP_NET_ADMIN" in row.detail
    assert "CAP_NET_ADMIN" in row.fix


def test_render_aligns_and_falls_back_to_ascii() -> None:
    report = Report("6.18", "x86_64", "1.1", {}, system=[Row("btf", "kernel BTF", True, "here")])
    report.features = [Row("kprobes", "kprobes", False, "absent", "rebuild")]
    report.tools = [Row("packets", "packets", True, "XDP links")]
    text = render(report, io.TextIOWrapper(io.BytesIO(), encoding="ascii"))
    assert "ok  kernel BTF  here" in text
    assert "NO  kprobes     absent" in text
    assert "fix: rebuild" in text
    assert report.ok
