"""`bpfscope doctor`: what this kernel and this process can run, what the kernel restricts (lockdown, LSMs,
sysctls, features it refuses although the process holds the capabilities), and a one-line fix where they
can't. It changes one thing: where securityfs is not mounted it mounts it on /sys/kernel/security, as
tools mount tracefs and bpffs, since the kernel shows lockdown and its LSMs nowhere else. Every probe
closes what it creates. A check that fails, however it fails, is a row in the report, never a traceback."""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Callable, TextIO

from .. import _libbpf, _privileges, features, mounts
from .._privileges import KernelRestrictions
from ..errors import KernelRefusedError, NotSupportedError, PermissionDeniedError
from ..features import Capability, Feature
from ..tools import _registry as registry
from ..tools._base import CORE_NEEDS

__all__ = [
    "TOOLS",
    "Report",
    "Row",
    "Tool",
    "add_arguments",
    "collect",
    "evaluate_tool",
    "lockdown_row",
    "lsm_row",
    "render",
    "run",
]


@dataclass(frozen=True)
class Row:
    """One line of the report: `key` in JSON, `name` for people, and a fix when not ok. `value` is what a
    setting reads (a sysctl's number, the lockdown mode, the LSM list), for JSON."""

    key: str
    name: str
    ok: bool
    detail: str = ""
    fix: str = ""
    value: object = None

    def as_json(self) -> dict[str, object]:
        found = {"ok": self.ok, "detail": self.detail, "fix": self.fix or None}
        return found if self.value is None else {**found, "value": self.value}


@dataclass(frozen=True)
class Tool:
    """A tool's needs: each entry of `needs` is a group of alternatives (keys of system or feature
    rows), of which one must be ok."""

    name: str
    needs: tuple[tuple[str, ...], ...]
    capabilities: tuple[Capability, ...]


def _tools() -> tuple[Tool, ...]:
    """The registry's tools (bpfscope.tools), each with what every tool needs first: its objects are
    CO-RE, so the kernel's BTF and a usable bpf() (CORE_NEEDS)."""
    infos = (registry.tool_info(name) for name in registry.tool_names())
    return tuple(Tool(info.name, CORE_NEEDS + info.needs, info.capabilities) for info in infos)


TOOLS = _tools()

# How to get what a row reports missing; a row's own fix (from what its probe found) comes first.
_FIXES = {
    "btf": "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y",
    "bpf_syscall": "run as root or with CAP_BPF",
    "ringbuf": "needs Linux >= 5.8",
    "tcx": "needs Linux >= 6.6; tc tools fall back to clsact",
    "clsact": "build the kernel with CONFIG_NET_SCH_INGRESS and CONFIG_NET_CLS_BPF",
    "batch_map_ops": "needs Linux >= 5.6",
    "kprobes": "build the kernel with CONFIG_KPROBES=y and CONFIG_KPROBE_EVENTS=y",
    "fentry": "needs a kernel that allows BPF trampolines on kernel functions",
    "tp_btf": "needs Linux >= 5.5 and a kernel that allows tracing programs; runqlat and biolatency use tracepoints",
    "perf_events": "build the kernel with CONFIG_PERF_EVENTS=y",
    "uprobes": "build the kernel with CONFIG_UPROBE_EVENTS=y",
    "tracepoints": "build the kernel with CONFIG_TRACING=y and CONFIG_BPF_EVENTS=y",
    "atomics": "needs Linux >= 5.12; guard and tcmon fall back to spin locks",
    "task_pt_regs": "needs Linux >= 5.15; opensnoop falls back to stashing arguments at syscall entry",
    "xdp_link": "needs Linux >= 5.9",
    "bpf_loop": "needs Linux >= 5.17; execsnoop, tcmon and the ring buffer benchmark run without it",
    "xdp_live_frames": "needs Linux >= 5.18 and a kernel that allows it; bench guard floods through AF_PACKET instead",
    "task_storage": "needs Linux >= 5.11 (syscount keeps each call's entry time there)",
    "task_from_pid": "needs Linux >= 6.2 (oomkill reads the victim's task with it)",
    "tracefs": f"mount -t tracefs nodev {mounts.TRACEFS}",
    "bpffs": f"mount -t bpf bpf {mounts.BPFFS}",
    "securityfs": f"mount -t securityfs securityfs {mounts.SECURITYFS}",
    "lsm": "boot with bpf added to lsm= (CONFIG_BPF_LSM=y); no bpfscope tool needs it",
}
# The kernel refused although the process holds the capabilities: no capability fixes that.
_REFUSED_FIX = "the kernel restricts this process: see the lockdown and LSMs rows"


def _capability_fix(missing: Sequence[Capability]) -> str:
    labels = ",".join(cap.label for cap in missing)
    return f"run as root or grant {labels} (docker: --cap-add for each)"


def evaluate_tool(tool: Tool, rows: Mapping[str, Row], have: frozenset[Capability]) -> Row:
    """Whether `tool` can run given the system and feature rows and the process's capabilities."""

    def name(key: str) -> str:
        return rows[key].name if key in rows else key

    missing = [group for group in tool.needs if not any(k in rows and rows[k].ok for k in group)]
    missing_caps = features.missing_capabilities(tool.capabilities, have)
    if not missing and not missing_caps:
        # name the alternative that will be used
        used = [name(next(k for k in group if rows[k].ok)) for group in tool.needs[len(CORE_NEEDS) :]]
        return Row(tool.name, tool.name, True, ", ".join(used + [cap.label for cap in tool.capabilities]))
    lacks = [" or ".join(map(name, group)) for group in missing] + [cap.label for cap in missing_caps]
    # without the capabilities the feature probes could not decide, so those come first
    if missing_caps:
        fix = _capability_fix(missing_caps)
    else:
        first = missing[0][0]
        fix = (rows[first].fix if first in rows else "") or _FIXES.get(first, "")
    return Row(tool.name, tool.name, False, "missing " + ", ".join(lacks), fix)


def _guarded(key: str, name: str, check: Callable[[], Row]) -> Row:
    try:
        return check()
    except PermissionDeniedError as exc:
        return Row(key, name, False, f"could not check: {exc}", "run bpfscope doctor as root")
    except KernelRefusedError as exc:
        return Row(key, name, False, f"could not check: {exc}", _REFUSED_FIX)
    # Any failure, expected or not, is reported as this row's answer: doctor must always finish.
    except Exception as exc:  # noqa: BLE001
        return Row(key, name, False, f"{type(exc).__name__}: {exc}", _FIXES.get(key, ""))


def _read_int(path: str) -> int:
    with open(path) as f:
        return int(f.read().strip())


# --- system checks ---


def _btf() -> Row:
    err = features.probe(Feature.BTF)
    if err is not None:
        return Row("btf", "kernel BTF", False, _reason(err), _FIXES["btf"])
    size = os.path.getsize("/sys/kernel/btf/vmlinux")
    return Row("btf", "kernel BTF", True, f"/sys/kernel/btf/vmlinux, {size / 2**20:.1f} MiB")


def _bpf_syscall() -> Row:
    try:
        features.check_bpf_syscall()
    except PermissionDeniedError as exc:
        return Row("bpf_syscall", "bpf() syscall", False, str(exc), _FIXES["bpf_syscall"])
    except KernelRefusedError as exc:
        return Row("bpf_syscall", "bpf() syscall", False, str(exc), _REFUSED_FIX)
    return Row("bpf_syscall", "bpf() syscall", True, "created and closed a BPF_MAP_TYPE_ARRAY map")


def _capabilities(have: frozenset[Capability]) -> Row:
    wanted = (Capability.BPF, Capability.PERFMON, Capability.NET_ADMIN)
    missing = features.missing_capabilities(wanted, have)
    shown = " ".join(cap.label for cap in sorted(have)) or "none"
    if missing:
        return Row("capabilities", "capabilities", False, f"effective: {shown}", _capability_fix(missing))
    return Row("capabilities", "capabilities", True, f"effective: {shown}")


_PARANOID = {
    -1: "no restrictions",
    0: "users: no raw tracepoints",
    1: "users: no CPU events",
    2: "users: no kernel profiling",
    3: "users: no perf events",
}


def _perf_event_paranoid(have: frozenset[Capability]) -> Row:
    path = "/proc/sys/kernel/perf_event_paranoid"
    if not os.path.exists(path):
        return Row("perf_event_paranoid", "perf_event_paranoid", False, f"no {path}", _FIXES["perf_events"])
    value = _read_int(path)
    detail = f"{value} ({_PARANOID.get(value, 'restricted')})"
    # CAP_PERFMON (or root) is not subject to the setting
    if not features.missing_capabilities((Capability.PERFMON,), have):
        return Row("perf_event_paranoid", "perf_event_paranoid", True, detail + "; CAP_PERFMON overrides it",
                   value=value)
    ok = value <= -1
    fix = "" if ok else "grant CAP_PERFMON, or sysctl kernel.perf_event_paranoid=-1"
    return Row("perf_event_paranoid", "perf_event_paranoid", ok, detail, fix, value)


_UNPRIVILEGED_BPF = {0: "allowed", 1: "disabled until reboot", 2: "disabled, root can re-enable"}


def _unprivileged_bpf(have: frozenset[Capability]) -> Row:
    key = "unprivileged_bpf_disabled"
    value = _read_int("/proc/sys/kernel/unprivileged_bpf_disabled")
    detail = f"{value} ({_UNPRIVILEGED_BPF.get(value, 'disabled')})"
    if value == 0 or not features.missing_capabilities((Capability.BPF,), have):
        return Row(key, key, True, detail + ("" if value == 0 else "; CAP_BPF overrides it"), value=value)
    return Row(key, key, False, detail, "run as root or with CAP_BPF", value)


# What each lockdown mode refuses BPF (security/lockdown: LOCKDOWN_BPF_WRITE_USER is an integrity reason;
# LOCKDOWN_BPF_READ_KERNEL, LOCKDOWN_KPROBES and LOCKDOWN_TRACEFS are confidentiality reasons).
_LOCKDOWN = {
    "none": "BPF is not restricted",
    "integrity": "bpf_probe_write_user is refused; reading kernel memory is allowed",
    "confidentiality": "BPF may neither read kernel memory nor write user memory; kprobes and tracefs are refused",
}
_UNKNOWN_WITHOUT_SECURITYFS = "unknown: securityfs is not mounted"


def lockdown_row(restrictions: KernelRestrictions, securityfs: str | None) -> Row:
    """The lockdown mode and what it refuses BPF; `securityfs` is where it is mounted (None: nowhere)."""
    mode = restrictions.lockdown
    if securityfs is None:
        return Row("lockdown", "lockdown", False, _UNKNOWN_WITHOUT_SECURITYFS, _FIXES["securityfs"])
    if mode is None:
        return Row("lockdown", "lockdown", True, "no lockdown LSM in this kernel")
    detail = f"{mode}: {_LOCKDOWN.get(mode, 'an unknown mode')}"
    # confidentiality forbids reading kernel memory, which every tracing program does
    if mode == "confidentiality":
        return Row("lockdown", "lockdown", False, detail, "boot with lockdown=integrity (or none)", mode)
    return Row("lockdown", "lockdown", True, detail, value=mode)


def lsm_row(restrictions: KernelRestrictions, securityfs: str | None) -> Row:
    """The active LSMs, and whether the BPF LSM is among them (lsm/ programs attach only then)."""
    lsms = restrictions.lsms
    if securityfs is None:
        return Row("lsm", "LSMs", False, _UNKNOWN_WITHOUT_SECURITYFS, _FIXES["securityfs"])
    if lsms is None:
        return Row("lsm", "LSMs", True, f"unknown: no {securityfs}/lsm (Linux < 5.1)")
    shown = ", ".join(lsms) or "none"
    if "bpf" in lsms:
        return Row("lsm", "LSMs", True, f"{shown}; the BPF LSM is active: lsm/ programs can attach", value=list(lsms))
    return Row("lsm", "LSMs", False, f"{shown}; no BPF LSM: lsm/ programs cannot attach", _FIXES["lsm"], list(lsms))


def _securityfs_row(path: str | None, mounted_now: bool) -> Row:
    key = "securityfs"
    if path is not None:
        return Row(key, key, True, f"mounted on {path}" + (" (doctor mounted it)" if mounted_now else ""))
    if key not in mounts.kernel_filesystems():
        return Row(key, key, False, "the kernel has no securityfs", "build the kernel with CONFIG_SECURITYFS=y")
    return Row(key, key, False, "not mounted: lockdown and LSMs unknown", _FIXES[key])


def _mount_securityfs(have: frozenset[Capability]) -> tuple[str | None, bool]:
    """Where securityfs is, mounting it where missing and the process may; and whether this run mounted it."""
    path = mounts.securityfs_path()
    if path is not None or Capability.SYS_ADMIN not in have:
        return path, False
    try:
        return mounts.ensure_securityfs(), True
    except OSError:  # no securityfs in the kernel, or the mount refused: its row says so
        return None, False


_MOUNT_POINTS = {"tracefs": mounts.TRACEFS, "bpf": mounts.BPFFS}


def _filesystem(key: str, fstype: str, path: str | None, have: frozenset[Capability]) -> Row:
    default = _MOUNT_POINTS[fstype]
    if path is not None:
        return Row(key, key, True, f"mounted on {path}")
    if fstype not in mounts.kernel_filesystems():
        return Row(key, key, False, f"the kernel has no {fstype}", f"build the kernel with {fstype} support")
    if Capability.SYS_ADMIN in have:
        return Row(key, key, True, f"not mounted; tools mount it on {default}")
    return Row(key, key, False, "not mounted", _FIXES[key])


def _bpffs_path() -> str | None:
    return next((m.target for m in mounts.mounts() if m.fstype == "bpf"), None)


def _clsact() -> Row:
    config = features.kernel_config()
    if config is None:
        return Row("clsact", "clsact + cls_bpf", True, "assumed: no kernel config to check")
    options = ("CONFIG_NET_SCH_INGRESS", "CONFIG_NET_CLS_BPF")
    absent = [o for o in options if config.get(o) not in ("y", "m")]
    if absent:
        return Row("clsact", "clsact + cls_bpf", False, " and ".join(absent) + " not set", _FIXES["clsact"])
    return Row("clsact", "clsact + cls_bpf", True, "in the kernel config")


# --- features ---


def _reason(err: NotSupportedError) -> str:
    # the message repeats the feature's name; the row already shows it
    prefix = f"this kernel does not support {err.feature}: "
    return str(err).removeprefix(prefix)


_NEEDED = {key for tool in TOOLS for group in tool.needs for key in group}


def _feature(feature: Feature) -> Row:
    err = features.probe(feature)
    if err is None:
        return Row(feature.key, feature.value, True)
    fix = _FIXES[feature.key] + ("" if feature.key in _NEEDED else " (no bpfscope tool needs it)")
    return Row(feature.key, feature.value, False, _reason(err), fix)


# --- the report ---


@dataclass
class Report:
    kernel: str
    arch: str
    libbpf: str
    libbpf_path: str
    capabilities: dict[str, bool]
    system: list[Row] = field(default_factory=list)
    features: list[Row] = field(default_factory=list)
    tools: list[Row] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The core works: kernel BTF and a usable bpf() syscall."""
        return all(row.ok for row in self.system if row.key in ("btf", "bpf_syscall"))

    def as_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "kernel": self.kernel,
            "arch": self.arch,
            "libbpf": self.libbpf,
            "libbpf_path": self.libbpf_path,
            "capabilities": self.capabilities,
            **{
                section: {row.key: row.as_json() for row in rows}
                for section, rows in (
                    ("system", self.system),
                    ("features", self.features),
                    ("tools", self.tools),
                )
            },
        }


def collect() -> Report:
    """Runs every check; each failure becomes its row."""
    try:
        have = features.effective_capabilities()
    except OSError:
        have = frozenset()
    major, minor = _libbpf.version()
    report = Report(
        kernel=platform.release(),
        arch=platform.machine(),
        libbpf=f"{major}.{minor}",
        libbpf_path=_libbpf.path(),
        capabilities={cap.label: cap in have for cap in Capability},
    )
    # before the probes, so that a refusal they meet names lockdown and the LSMs
    securityfs, mounted_now = _mount_securityfs(have)
    restrictions = _privileges.kernel_restrictions(securityfs) if securityfs else KernelRestrictions(None, None)
    system: list[tuple[str, str, Callable[[], Row]]] = [
        ("btf", "kernel BTF", _btf),
        ("bpf_syscall", "bpf() syscall", _bpf_syscall),
        ("capabilities", "capabilities", lambda: _capabilities(have)),
        ("perf_event_paranoid", "perf_event_paranoid", lambda: _perf_event_paranoid(have)),
        ("unprivileged_bpf_disabled", "unprivileged_bpf_disabled", lambda: _unprivileged_bpf(have)),
        ("lockdown", "lockdown", lambda: lockdown_row(restrictions, securityfs)),
        ("lsm", "LSMs", lambda: lsm_row(restrictions, securityfs)),
        ("tracefs", "tracefs", lambda: _filesystem("tracefs", "tracefs", mounts.tracefs_path(), have)),
        ("bpffs", "bpffs", lambda: _filesystem("bpffs", "bpf", _bpffs_path(), have)),
        ("securityfs", "securityfs", lambda: _securityfs_row(securityfs, mounted_now)),
    ]
    report.system = [_guarded(key, name, check) for key, name, check in system]
    report.features = [_guarded(f.key, f.value, functools.partial(_feature, f)) for f in Feature]
    report.features.append(_guarded("clsact", "clsact + cls_bpf", _clsact))
    rows = {row.key: row for row in report.system + report.features}
    report.tools = [_guarded(t.name, t.name, functools.partial(evaluate_tool, t, rows, have)) for t in TOOLS]
    return report


def _marks(stream: TextIO) -> tuple[str, str]:
    try:
        "✓✗".encode(stream.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "ok", "NO"
    return "✓", "✗"


def render(report: Report, stream: TextIO) -> str:
    """The human table: one aligned row per check, the fix on the line below a failed one."""
    good, bad = _marks(stream)
    sections = (("System", report.system), ("Features", report.features), ("Tools", report.tools))
    width = max(len(row.name) for _, rows in sections for row in rows)
    mark_width = max(len(good), len(bad))
    lines = [f"bpfscope doctor: Linux {report.kernel} {report.arch}, libbpf {report.libbpf} ({report.libbpf_path})"]
    for title, rows in sections:
        lines += ["", title]
        for row in rows:
            mark = good if row.ok else bad
            lines.append(f"  {mark:<{mark_width}}  {row.name:<{width}}  {row.detail}".rstrip())
            if row.fix:
                lines.append(f"  {'':<{mark_width}}  {'':<{width}}  fix: {row.fix}")
    verdict = "the core works" if report.ok else "the core does not work: see kernel BTF and bpf() syscall"
    lines += ["", f"{verdict}; {sum(r.ok for r in report.tools)} of {len(report.tools)} tools can run here"]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args: argparse.Namespace) -> int:
    report = collect()
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        print(render(report, sys.stdout))
    return 0 if report.ok else 1
