"""What doctor reads from /proc and /sys (capabilities, kernel config, mounts, lockdown, LSMs), parsed without
root; and its verdicts from given rows."""

from __future__ import annotations

import io

import pytest

from bpfscope._privileges import (
    KernelRestrictions,
    holders,
    load_needs,
    parse_labels,
    parse_lockdown,
    parse_lsms,
    parse_uid_map,
)
from bpfscope.cli.doctor import TOOLS, Report, Row, Tool, evaluate_tool, lockdown_row, lsm_row, render
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
        ("000000c000201000\n", {Capability.BPF, Capability.PERFMON, Capability.NET_ADMIN, Capability.SYS_ADMIN}),
        ("0000000000000004", {Capability.DAC_READ_SEARCH}),
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


def test_lsm_list_keeps_the_kernels_order() -> None:
    # this machine's /sys/kernel/security/lsm (kernel-facts.md)
    assert parse_lsms("lockdown,capability,landlock,bpf") == ("lockdown", "capability", "landlock", "bpf")
    assert parse_lsms("capability,selinux\n") == ("capability", "selinux")
    assert parse_lsms("") == ()


@pytest.mark.parametrize(
    ("text", "initial"),
    [
        ("         0          0 4294967295\n", True),
        ("         0       1000          1\n", False),  # rootless container: root is uid 1000 outside
        ("         0     100000      65536\n", False),
    ],
)
def test_initial_user_namespace(text: str, initial: bool) -> None:
    assert parse_uid_map(text) is initial


def test_capability_labels_as_errors_name_them() -> None:
    assert parse_labels("CAP_BPF") == (Capability.BPF,)
    assert parse_labels("CAP_BPF+CAP_PERFMON") == (Capability.BPF, Capability.PERFMON)
    assert parse_labels("CAP_SYS_PTRACE") is None  # not one bpfscope tracks: nothing to say about holding it


def test_what_loading_a_program_needs_by_its_type() -> None:
    xdp, tracepoint, tracing, socket_filter = 6, 5, 26, 1
    assert load_needs(xdp) == (Capability.BPF, Capability.NET_ADMIN)
    assert load_needs(tracepoint) == (Capability.BPF, Capability.PERFMON)
    assert load_needs(tracing) == (Capability.BPF, Capability.PERFMON)
    assert load_needs(socket_filter) == (Capability.BPF,)


def test_holders_name_only_what_the_process_has() -> None:
    needed = (Capability.BPF, Capability.PERFMON)
    assert holders(needed, ALL) == ["CAP_BPF", "CAP_PERFMON"]
    # before 5.8 (or granted only CAP_SYS_ADMIN) it is CAP_SYS_ADMIN that grants both
    assert holders(needed, frozenset({Capability.SYS_ADMIN})) == ["CAP_SYS_ADMIN"]
    assert holders(needed, frozenset({Capability.SYS_ADMIN, Capability.BPF})) == ["CAP_BPF", "CAP_SYS_ADMIN"]


@pytest.mark.parametrize(
    ("restrictions", "suspects"),
    [
        (KernelRestrictions(None, None), "lockdown, an LSM or a build option"),
        (
            KernelRestrictions("integrity", ("lockdown", "capability", "landlock", "bpf")),
            "lockdown (integrity), an LSM (landlock, bpf) or a build option",
        ),
        (KernelRestrictions("none", ("capability", "selinux")), "an LSM (selinux) or a build option"),
        (KernelRestrictions("none", ("lockdown", "capability")), "a build option"),
    ],
)
def test_suspects_name_what_is_known(restrictions: KernelRestrictions, suspects: str) -> None:
    assert restrictions.suspects() == suspects


HERE = KernelRestrictions("integrity", ("lockdown", "capability", "landlock", "bpf"))


def test_lockdown_row_says_what_the_mode_refuses_bpf() -> None:
    row = lockdown_row(HERE, "/sys/kernel/security")
    assert row.ok and row.value == "integrity"
    assert row.detail == "integrity: bpf_probe_write_user is refused; reading kernel memory is allowed"
    strict = lockdown_row(KernelRestrictions("confidentiality", None), "/sys/kernel/security")
    assert not strict.ok and "read kernel memory" in strict.detail and "lockdown=integrity" in strict.fix
    assert lockdown_row(KernelRestrictions(None, ("capability",)), "/sys/kernel/security").detail == (
        "no lockdown LSM in this kernel"
    )


def test_without_securityfs_lockdown_and_lsms_are_unknown_not_absent() -> None:
    for row in (lockdown_row(KernelRestrictions(None, None), None), lsm_row(KernelRestrictions(None, None), None)):
        assert not row.ok and row.value is None
        assert row.detail == "unknown: securityfs is not mounted"
        assert row.fix == "mount -t securityfs securityfs /sys/kernel/security"


def test_lsm_row_says_whether_the_bpf_lsm_is_active() -> None:
    row = lsm_row(HERE, "/sys/kernel/security")
    assert row.ok and row.value == ["lockdown", "capability", "landlock", "bpf"]
    assert row.detail == "lockdown, capability, landlock, bpf; the BPF LSM is active: lsm/ programs can attach"
    without = lsm_row(KernelRestrictions("none", ("capability", "apparmor")), "/sys/kernel/security")
    assert not without.ok and "no BPF LSM" in without.detail and "no bpfscope tool needs it" in without.fix
    assert row.as_json() == {"ok": True, "detail": row.detail, "fix": None, "value": row.value}


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
    report = Report("6.18", "x86_64", "1.1", "/usr/lib/x86_64-linux-gnu/libbpf.so.1.1.2", {},
                    system=[Row("btf", "kernel BTF", True, "here")])
    report.features = [Row("kprobes", "kprobes", False, "absent", "rebuild")]
    report.tools = [Row("packets", "packets", True, "XDP links")]
    text = render(report, io.TextIOWrapper(io.BytesIO(), encoding="ascii"))
    assert "ok  kernel BTF  here" in text
    assert "NO  kprobes     absent" in text
    assert "fix: rebuild" in text
    assert report.ok
