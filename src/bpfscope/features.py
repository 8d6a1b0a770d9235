"""Cached run-time probes: does this kernel have a feature? `probe` answers None or a NotSupportedError
saying why not, found by trying the real thing (load a two-instruction program, create a link, create a
map) rather than by comparing kernel versions, which backports and distribution configs make unreliable.

A probe that cannot decide because the process lacks a capability raises PermissionDeniedError and is
not cached, so a later call with more privileges probes again (cilium/ebpf's features/ does the same).
A refusal although the process holds them is the kernel's answer: not supported, saying so.
Every probe closes what it creates before returning: nothing stays loaded, attached or pinned."""

from __future__ import annotations

import ctypes
import enum
import errno
import functools
import gzip
import os
import platform
import socket
import struct
import types
from collections.abc import Mapping
from ctypes import c_uint32
from typing import Callable

from . import _libbpf, mounts
from ._privileges import Capability, effective_capabilities, missing_capabilities, parse_capabilities
from ._uapi import (
    BPF_F_TEST_XDP_LIVE_FRAMES,
    BPF_FUNC_GET_CURRENT_TASK_BTF,
    BPF_FUNC_LOOP,
    BPF_FUNC_TASK_PT_REGS,
    BPF_PSEUDO_FUNC,
    ENOTSUPP,
    TCX_PASS,
    AttachType,
    MapType,
    ProgramType,
    XdpAction,
    XdpFlags,
)
from .errors import KernelRefusedError, NotSupportedError, SyscallError

__all__ = [
    "Capability",
    "Feature",
    "check_bpf_syscall",
    "effective_capabilities",
    "kernel_config",
    "missing_capabilities",
    "parse_capabilities",
    "parse_kernel_config",
    "probe",
    "require",
    "tracepoint_arguments",
]


# r0 = <imm>; exit
_EXIT = b"\x95\x00\x00\x00\x00\x00\x00\x00"


def _return(value: int) -> bytes:
    return b"\xb7\x00\x00\x00" + value.to_bytes(4, "little") + _EXIT


# --- kernel config ---


def parse_kernel_config(text: str) -> dict[str, str]:
    """CONFIG_X=value lines; `# CONFIG_X is not set` becomes "n"."""
    config = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            name, value = line.split("=", 1)
            config[name] = value.strip('"')
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            config[line[2:].split()[0]] = "n"
    return config


@functools.cache
def kernel_config() -> Mapping[str, str] | None:
    """The running kernel's build config from /proc/config.gz or /boot/config-<release>, or None."""
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            text = f.read()
    except OSError:
        try:
            with open(f"/boot/config-{platform.release()}") as f:
                text = f.read()
        except OSError:
            return None
    return types.MappingProxyType(parse_kernel_config(text))


def _config(option: str) -> str | None:
    config = kernel_config()
    return None if config is None else config.get(option, "n")


# --- probing helpers ---


def _close(fd: int) -> None:
    if fd >= 0:
        os.close(fd)


def _answer(feature: Feature, err: int, op: str, needs: tuple[Capability, ...]) -> Exception:
    """What a failed probe step means: lacking privileges means the probe cannot decide (raise it), a
    refusal although the process holds them is the kernel's no, as is an errno that means "unknown to
    this kernel"; anything else is a real error."""
    if err in (errno.EPERM, errno.EACCES):
        denied = _libbpf.error(err, op, "+".join(cap.label for cap in needs))
        if not isinstance(denied, KernelRefusedError):
            return denied
        refused = NotSupportedError(feature.value, str(denied))
        refused.__cause__ = denied  # callers tell "refused" from "absent" by it
        return refused
    if err in (errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP):
        return NotSupportedError(feature.value, f"{op}: {os.strerror(err)}")
    return SyscallError(err, op)


def _map_create(map_type: int, max_entries: int, feature: Feature, op: str) -> int:
    fd = _libbpf.bpf_map_create(map_type, b"bpfscope_probe", 4, 4, max_entries, None)
    if fd < 0:
        raise _answer(feature, -fd, op, (Capability.BPF,))
    return int(fd)


def _prog_load(
    prog_type: int,
    r0: int,
    feature: Feature,
    op: str,
    needs: tuple[Capability, ...],
    opts: _libbpf.BpfProgLoadOpts | None = None,
) -> int:
    insns = _return(r0)
    fd = _libbpf.bpf_prog_load(prog_type, b"bpfscope_probe", b"GPL", insns, len(insns) // 8, opts)
    if fd < 0:
        raise _answer(feature, -fd, op, needs)
    return int(fd)


def _libbpf_probe(
    func: Callable[[int, None], int], kind: int, feature: Feature, op: str, needs: tuple[Capability, ...]
) -> None:
    """libbpf_probe_bpf_{map,prog}_type answers 1/0; on 0 the failed bpf() call's errno says why."""
    ctypes.set_errno(0)
    ret = func(kind, None)
    if ret == 1:
        return
    raise _answer(feature, -ret if ret < 0 else ctypes.get_errno() or errno.EOPNOTSUPP, op, needs)


def _pmu(name: str) -> bool:
    return os.path.isdir(f"/sys/bus/event_source/devices/{name}")


def _loopback() -> int:
    return socket.if_nametoindex("lo")


_NET = (Capability.BPF, Capability.NET_ADMIN)
_TRACE = (Capability.BPF, Capability.PERFMON)


# --- the probes: each returns when the feature is there and raises NotSupportedError when not ---


def _ringbuf() -> None:
    _libbpf_probe(
        _libbpf.libbpf_probe_bpf_map_type,
        MapType.RINGBUF,
        Feature.RINGBUF,
        "creating a BPF_MAP_TYPE_RINGBUF map",
        (Capability.BPF,),
    )


def _batch_map_ops() -> None:
    op = "BPF_MAP_LOOKUP_BATCH on an empty hash map"
    fd = _map_create(MapType.HASH, 1, Feature.BATCH_MAP_OPS, "creating a BPF_MAP_TYPE_HASH map")
    try:
        # an empty map has nothing to return: ENOENT means the kernel knows the command
        keys, values, batch = (ctypes.c_char * 8)(), (ctypes.c_char * 8)(), (ctypes.c_char * 8)()
        count = c_uint32(1)
        ret = _libbpf.bpf_map_lookup_batch(fd, None, batch, keys, values, ctypes.byref(count), None)
        if ret < 0 and -ret != errno.ENOENT:
            raise _answer(Feature.BATCH_MAP_OPS, -ret, op, (Capability.BPF,))
    finally:
        os.close(fd)


def _attach_link(
    feature: Feature, prog_type: int, r0: int, attach_type: int, flags: int, busy_ok: tuple[int, ...]
) -> None:
    """Loads a program that lets every packet through and links it to lo for a moment."""
    what = f"{feature.value} on lo"
    fd = _prog_load(prog_type, r0, feature, f"loading a program for {what}", _NET)
    try:
        opts = _libbpf.BpfLinkCreateOpts(sz=ctypes.sizeof(_libbpf.BpfLinkCreateOpts), flags=flags)
        link = _libbpf.bpf_link_create(fd, _loopback(), attach_type, ctypes.byref(opts))
        if link < 0 and -link not in busy_ok:
            raise _answer(feature, -link, f"BPF_LINK_CREATE for {what}", _NET)
        _close(link)
    finally:
        os.close(fd)


def _tcx() -> None:
    _attach_link(Feature.TCX, ProgramType.SCHED_CLS, TCX_PASS, AttachType.TCX_INGRESS, 0, ())


def _xdp_link() -> None:
    # Another XDP program already on lo makes the kernel answer EBUSY/EEXIST, which only a kernel that
    # has XDP links can say.
    _attach_link(
        Feature.XDP_LINK,
        ProgramType.XDP,
        XdpAction.PASS,
        AttachType.XDP,
        XdpFlags.SKB_MODE,
        (errno.EBUSY, errno.EEXIST),
    )


def _xdp_live_frames() -> None:
    # One 64-byte frame through BPF_PROG_TEST_RUN in live-frames mode on lo, which the program drops:
    # nothing reaches the stack. The 2026-12 build of Linux 6.18 refuses the flag even to root.
    feature, what = Feature.XDP_LIVE_FRAMES, "BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES on lo"
    fd = _prog_load(ProgramType.XDP, XdpAction.DROP, feature, f"loading a program for {what}", _NET)
    try:
        frame = ctypes.create_string_buffer(64)
        ctx = struct.pack("=6I", 0, len(frame), 0, _loopback(), 0, 0)  # struct xdp_md: data_end, ingress_ifindex
        ctx_in = ctypes.create_string_buffer(ctx, len(ctx))
        opts = _libbpf.BpfTestRunOpts(sz=ctypes.sizeof(_libbpf.BpfTestRunOpts), data_in=ctypes.addressof(frame),
                                      data_size_in=len(frame), ctx_in=ctypes.addressof(ctx_in),
                                      ctx_size_in=len(ctx), repeat=1, flags=BPF_F_TEST_XDP_LIVE_FRAMES)
        ret = _libbpf.bpf_prog_test_run_opts(fd, opts)
        if ret < 0:
            raise _answer(feature, -ret, what, _NET)
    finally:
        os.close(fd)


def _task_storage() -> None:
    _libbpf_probe(
        _libbpf.libbpf_probe_bpf_map_type,
        MapType.TASK_STORAGE,
        Feature.TASK_STORAGE,
        "creating a BPF_MAP_TYPE_TASK_STORAGE map",
        (Capability.BPF,),
    )


def _task_from_pid() -> None:
    # A kfunc is there when the kernel's BTF has a function of that name (Linux 6.2+).
    if not _vmlinux_function("bpf_task_from_pid"):
        raise NotSupportedError(Feature.TASK_FROM_PID.value, "no bpf_task_from_pid in the kernel's BTF")


def _kprobes() -> None:
    # libbpf attaches kprobes through the kprobe PMU (perf_event_open), not tracefs's kprobe_events:
    # the PMU is the answer, whether or not tracefs is mounted yet (a 5.10 guest probed before it was).
    if not _pmu("kprobe"):
        unset = " (CONFIG_KPROBES is not set)" if _config("CONFIG_KPROBES") == "n" else ""
        raise NotSupportedError(Feature.KPROBES.value, f"no /sys/bus/event_source/devices/kprobe{unset}")


# The one kernel function that exists to be traced by tests (net/bpf/test_run.c).
_FENTRY_TARGET = "bpf_fentry_test1"


def _fentry() -> None:
    feature = Feature.FENTRY
    # BPF trampolines patch the function-entry nop that the function tracer compiles in; x86 reaches
    # it through ftrace direct calls.
    options = ["CONFIG_FUNCTION_TRACER"]
    if platform.machine() == "x86_64":
        options.append("CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS")
    for option in options:
        if _config(option) == "n":
            raise NotSupportedError(feature.value, f"{option} is not set")
    _load_and_attach_tracing(feature, AttachType.TRACE_FENTRY, _FENTRY_TARGET, f"fentry/{_FENTRY_TARGET}")


# A tracepoint every kernel has; the probe's program returns at once, attached for a moment.
_TP_BTF_TARGET = "sched_switch"


def _tp_btf() -> None:
    _load_and_attach_tracing(Feature.TP_BTF, AttachType.TRACE_RAW_TP, _TP_BTF_TARGET, f"tp_btf/{_TP_BTF_TARGET}")


def _load_and_attach_tracing(feature: Feature, attach_type: AttachType, target: str, section: str) -> None:
    """A BPF_PROG_TYPE_TRACING program on `target` (a function, or a tracepoint's btf_trace_ typedef)
    loaded and attached: the prog type alone is not enough, kernels can refuse it at load or attach."""
    btf_id = _libbpf.libbpf_find_vmlinux_btf_id(target.encode(), attach_type)
    if btf_id < 0:
        raise NotSupportedError(feature.value, f"{target} is not in the kernel's BTF")
    opts = _libbpf.BpfProgLoadOpts(
        sz=ctypes.sizeof(_libbpf.BpfProgLoadOpts), expected_attach_type=attach_type, attach_btf_id=btf_id
    )
    fd = _prog_load(ProgramType.TRACING, 0, feature, f"loading {section}", _TRACE, opts)
    try:
        # libbpf falls back to BPF_RAW_TRACEPOINT_OPEN where LINK_CREATE takes no tracing programs.
        link = _libbpf.bpf_link_create(fd, 0, attach_type, None)
        if link < 0:
            raise _answer(feature, -link, f"attaching {section}", _TRACE)
        os.close(link)
    finally:
        os.close(fd)


_BTF_MAGIC = b"\x9f\xeb"  # 0xeb9f, little-endian


def _btf() -> None:
    path = "/sys/kernel/btf/vmlinux"
    try:
        with open(path, "rb") as f:
            magic = f.read(2)
    except FileNotFoundError:
        raise NotSupportedError(Feature.BTF.value, f"no {path} (CONFIG_DEBUG_INFO_BTF is not set)") from None
    if magic != _BTF_MAGIC:
        raise NotSupportedError(Feature.BTF.value, f"{path} does not start with the BTF magic")


def _perf_events() -> None:
    if not os.path.exists("/proc/sys/kernel/perf_event_paranoid"):
        raise NotSupportedError(
            Feature.PERF_EVENTS.value,
            "no /proc/sys/kernel/perf_event_paranoid (CONFIG_PERF_EVENTS is not set)",
        )


def _uprobes() -> None:
    if not _pmu("uprobe"):
        raise NotSupportedError(
            Feature.UPROBES.value, "no /sys/bus/event_source/devices/uprobe (CONFIG_UPROBE_EVENTS is not set)"
        )
    # uprobe programs are BPF_PROG_TYPE_KPROBE, which needs CONFIG_BPF_EVENTS
    _libbpf_probe(
        _libbpf.libbpf_probe_bpf_prog_type,
        ProgramType.KPROBE,
        Feature.UPROBES,
        "loading a BPF_PROG_TYPE_KPROBE program",
        _TRACE,
    )


def _tracepoints() -> None:
    feature = Feature.TRACEPOINTS
    if not _pmu("tracepoint"):
        raise NotSupportedError(feature.value, "no /sys/bus/event_source/devices/tracepoint")
    # Mounted or not (tools mount it), the kernel must know tracefs: tracepoint ids are read there.
    if "tracefs" not in mounts.kernel_filesystems():
        raise NotSupportedError(
            feature.value, "tracefs is not in /proc/filesystems (CONFIG_TRACING is not set)"
        )
    _libbpf_probe(
        _libbpf.libbpf_probe_bpf_prog_type,
        ProgramType.TRACEPOINT,
        feature,
        "loading a BPF_PROG_TYPE_TRACEPOINT program",
        _TRACE,
    )


# --- instruction set and helpers newer than the oldest kernels bpfscope runs on ---



def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One struct bpf_insn."""
    regs = bytes([code, src << 4 | dst])
    return regs + off.to_bytes(2, "little", signed=True) + imm.to_bytes(4, "little", signed=True)


def _load_insns(prog_type: int, insns: bytes, feature: Feature, op: str, needs: tuple[Capability, ...]) -> None:
    """Loads `insns` and closes the program at once: the verifier's yes is the answer."""
    fd = _libbpf.bpf_prog_load(prog_type, b"bpfscope_probe", b"GPL", insns, len(insns) // 8, None)
    if fd < 0:
        raise _answer(feature, -fd, op, needs)
    os.close(fd)


def _atomics() -> None:
    # Linux 5.12's atomics on a stack slot: the fetching add and the compare-and-swap guard uses. Older
    # kernels know only BPF_XADD (imm 0) and reject the rest as "BPF_STX uses reserved fields".
    insns = b"".join((
        _insn(0x7A, dst=10, off=-8),                          # *(u64 *)(r10 - 8) = 0
        _insn(0xB7, dst=1, imm=1),                            # r1 = 1
        _insn(0xDB, dst=10, src=1, off=-8, imm=0x01),         # r1 = atomic_fetch_add((u64 *)(r10 - 8), r1)
        _insn(0xB7, dst=0),                                   # r0 = 0
        _insn(0xDB, dst=10, src=1, off=-8, imm=0xF1),         # r0 = cmpxchg_64(r10 - 8, r0, r1)
    )) + _return(XdpAction.PASS)
    _load_insns(ProgramType.XDP, insns, Feature.ATOMICS, "loading an XDP program with BPF_CMPXCHG", _NET)


def _task_pt_regs() -> None:
    # opensnoop's fast path: the syscall's saved user registers from its exit tracepoint.
    insns = b"".join((
        _insn(0x85, imm=BPF_FUNC_GET_CURRENT_TASK_BTF),      # r0 = bpf_get_current_task_btf()
        _insn(0xBF, dst=1, src=0),                            # r1 = r0
        _insn(0x85, imm=BPF_FUNC_TASK_PT_REGS),              # r0 = bpf_task_pt_regs(r1)
    )) + _return(0)
    _load_insns(
        ProgramType.TRACEPOINT,
        insns,
        Feature.TASK_PT_REGS,
        "loading a tracepoint program calling bpf_task_pt_regs(bpf_get_current_task_btf())",
        _TRACE,
    )

# --- bpf_loop: a program with a callback, and the BTF that must describe it ---

_BTF_KIND_INT, _BTF_KIND_PTR, _BTF_KIND_FUNC, _BTF_KIND_FUNC_PROTO = 1, 2, 12, 13
_BTF_FUNC_STATIC, _BTF_FUNC_GLOBAL = 0, 1


def _btf_type(name_off: int, kind: int, vlen: int, size_or_type: int) -> bytes:
    return struct.pack("<III", name_off, kind << 24 | vlen, size_or_type)


def _loop_probe_btf() -> bytes:
    """BTF for `int bpfscope_probe(void)` (global, [4]) and `static int cb(int, void *)` ([6]): the
    verifier takes a callback only from a program whose func_info names each subprogram."""
    strings = b"\0int\0bpfscope_probe\0cb\0i\0ctx\0"  # a function's parameters need names
    types = b"".join((
        _btf_type(1, _BTF_KIND_INT, 0, 4) + struct.pack("<I", 1 << 24 | 32),  # [1] int: signed, 32 bits
        _btf_type(0, _BTF_KIND_PTR, 0, 0),  # [2] void *
        _btf_type(0, _BTF_KIND_FUNC_PROTO, 0, 1),  # [3] int (void)
        _btf_type(5, _BTF_KIND_FUNC, _BTF_FUNC_GLOBAL, 3),  # [4] bpfscope_probe
        _btf_type(0, _BTF_KIND_FUNC_PROTO, 2, 1) + struct.pack("<IIII", 23, 1, 25, 2),  # [5] int (int i, void *ctx)
        _btf_type(20, _BTF_KIND_FUNC, _BTF_FUNC_STATIC, 5),  # [6] cb
    ))
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return header + types + strings


# r1 = 1 (one iteration); r2 = &cb; r3 = 0 (ctx); r4 = 0 (flags); call bpf_loop; return 0.
# cb: return 0. The ld_imm64's imm is cb's offset from the instruction after it.
_LOOP_INSNS = b"".join((
    _insn(0xB7, dst=1, imm=1),
    _insn(0x18, dst=2, src=BPF_PSEUDO_FUNC, imm=6),
    _insn(0x00),
    _insn(0xB7, dst=3),
    _insn(0xB7, dst=4),
    _insn(0x85, imm=BPF_FUNC_LOOP),
    _return(0),
    _return(0),
))
_LOOP_CALLBACK_INSN = 8


def _bpf_loop() -> None:
    """Loads a program that calls bpf_loop (Linux 5.17+) with a callback. An older verifier refuses
    the callback's subprogram (EINVAL: its func_info names a subprogram it does not see)."""
    feature, op, needs = Feature.BPF_LOOP, "loading a program that calls bpf_loop", (Capability.BPF,)
    if missing_capabilities(needs):  # bpf_loop is offered only to programs loaded with CAP_BPF
        raise _libbpf.error(errno.EPERM, op)
    btf = _loop_probe_btf()
    btf_fd = _libbpf.bpf_btf_load(btf, len(btf), None)
    if btf_fd < 0:
        raise _answer(feature, -btf_fd, "loading the BTF of a bpf_loop probe", needs)
    try:
        func_info = (c_uint32 * 4)(0, 4, _LOOP_CALLBACK_INSN, 6)  # struct bpf_func_info: insn_off, type_id
        opts = _libbpf.BpfProgLoadOpts(
            sz=ctypes.sizeof(_libbpf.BpfProgLoadOpts), prog_btf_fd=btf_fd,
            func_info=ctypes.cast(func_info, ctypes.c_void_p), func_info_cnt=2, func_info_rec_size=8,
        )
        fd = _libbpf.bpf_prog_load(
            ProgramType.SOCKET_FILTER, b"bpfscope_probe", b"GPL", _LOOP_INSNS, len(_LOOP_INSNS) // 8, opts
        )
        if fd < 0:
            raise _answer(feature, -fd, op, needs)
        os.close(fd)
    finally:
        os.close(btf_fd)


# --- public API ---


class Feature(enum.Enum):
    """A kernel feature bpfscope's tools depend on; `value` is how messages name it."""

    RINGBUF = "ring buffers"
    TCX = "tcx links"
    BATCH_MAP_OPS = "batch map operations"
    KPROBES = "kprobes"
    FENTRY = "fentry"
    TP_BTF = "BTF tracepoints (tp_btf)"
    TASK_STORAGE = "task local storage"
    TASK_FROM_PID = "the bpf_task_from_pid kfunc"
    BTF = "kernel BTF"
    PERF_EVENTS = "perf events"
    UPROBES = "uprobes"
    TRACEPOINTS = "tracepoints"
    ATOMICS = "BPF atomic fetch/cmpxchg"
    TASK_PT_REGS = "bpf_task_pt_regs"
    XDP_LINK = "XDP links"
    BPF_LOOP = "bpf_loop"
    XDP_LIVE_FRAMES = "XDP live frames in BPF_PROG_TEST_RUN"

    @property
    def key(self) -> str:
        """The name in JSON output: ringbuf, xdp_link, ..."""
        return self.name.lower()


_PROBES: dict[Feature, Callable[[], None]] = {
    Feature.RINGBUF: _ringbuf,
    Feature.TCX: _tcx,
    Feature.BATCH_MAP_OPS: _batch_map_ops,
    Feature.KPROBES: _kprobes,
    Feature.FENTRY: _fentry,
    Feature.TP_BTF: _tp_btf,
    Feature.TASK_STORAGE: _task_storage,
    Feature.TASK_FROM_PID: _task_from_pid,
    Feature.BTF: _btf,
    Feature.PERF_EVENTS: _perf_events,
    Feature.UPROBES: _uprobes,
    Feature.TRACEPOINTS: _tracepoints,
    Feature.ATOMICS: _atomics,
    Feature.TASK_PT_REGS: _task_pt_regs,
    Feature.XDP_LINK: _xdp_link,
    Feature.BPF_LOOP: _bpf_loop,
    Feature.XDP_LIVE_FRAMES: _xdp_live_frames,
}


@functools.cache
def probe(feature: Feature) -> NotSupportedError | None:
    """None when the running kernel has `feature`, else a NotSupportedError whose one line says why (its
    __cause__ is a KernelRefusedError where the kernel refused the feature to a privileged process).

    Cached for the life of the process. Raises PermissionDeniedError (not cached) when the process lacks
    the capabilities to find out, and SyscallError for a failure that says nothing about support."""
    try:
        _PROBES[feature]()
    except NotSupportedError as exc:
        return exc.with_traceback(None)  # cached: keep no frames alive
    return None


def require(feature: Feature) -> None:
    """Raises NotSupportedError naming `feature` unless the running kernel has it."""
    err = probe(feature)
    if err is not None:
        raise err.with_traceback(None)


class _BtfType(ctypes.Structure):
    """struct btf_type (linux/btf.h): its name, kind and vlen in `info`, and a size or a type id."""

    _fields_ = [("name_off", c_uint32), ("info", c_uint32), ("type", c_uint32)]


_BTF_KIND_TYPEDEF = 8
_BTF_KIND_FUNC = 12


@functools.cache
def _vmlinux_function(name: str) -> bool:
    """Whether the kernel's BTF has a function `name` (a kfunc, a traceable function)."""
    btf = _libbpf.btf__load_vmlinux_btf()
    if not btf:
        return False
    try:
        return bool(_libbpf.btf__find_by_name_kind(btf, name.encode(), _BTF_KIND_FUNC) > 0)
    finally:
        _libbpf.btf__free(btf)


def tracepoint_arguments(name: str) -> int | None:
    """How many arguments the kernel passes to a BTF tracepoint's programs (tp_btf/NAME): the parameters
    of its btf_trace_NAME typedef's prototype, less the leading `void *`; None where the kernel's BTF has
    no such tracepoint. Prototypes change between kernels (block_rq_issue took the request's queue
    first before Linux 5.11) while the tracepoint keeps its name; a program reads its arguments by
    position, so this tells which layout it will get."""
    btf = _libbpf.btf__load_vmlinux_btf()
    if not btf:
        return None
    try:
        type_id = _libbpf.btf__find_by_name_kind(btf, f"btf_trace_{name}".encode(), _BTF_KIND_TYPEDEF)
        if type_id <= 0:
            return None
        for _ in range(2):  # the typedef names a pointer, which points at the prototype
            type_id = _BtfType.from_address(_libbpf.btf__type_by_id(btf, type_id)).type
        params = _BtfType.from_address(_libbpf.btf__type_by_id(btf, type_id)).info & 0xFFFF
        return int(params) - 1
    finally:
        _libbpf.btf__free(btf)


def check_bpf_syscall() -> None:
    """Creates and closes a 1-entry BPF_MAP_TYPE_ARRAY; raises PermissionDeniedError or SyscallError
    when the bpf() syscall is unusable for this process. Not cached: privileges can change."""
    fd = _libbpf.check(
        _libbpf.bpf_map_create(MapType.ARRAY, b"bpfscope_probe", 4, 4, 1, None),
        "bpf(BPF_MAP_CREATE, BPF_MAP_TYPE_ARRAY)",
    )
    os.close(fd)
