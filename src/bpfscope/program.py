"""A loaded program and the ways to attach it: XDP, tc, tracepoints, uprobes, perf events; and
test_run, which runs an XDP or tc program on given bytes without any interface."""

from __future__ import annotations

import ctypes
import errno
import glob
import os
import struct
from dataclasses import dataclass
from typing import Optional, Union

from . import _libbpf, netdev
from ._uapi import (
    BPF_F_TEST_XDP_LIVE_FRAMES,
    BPF_TC_EGRESS,
    BPF_TC_INGRESS,
    NR_PERF_EVENT_OPEN,
    PERF_ATTR_FREQ,
    PERF_ATTR_SIZE_VER0,
    PERF_COUNT_SW_CPU_CLOCK,
    PERF_FLAG_FD_CLOEXEC,
    PERF_TYPE_SOFTWARE,
    AttachType,
    ProgramType,
    XdpAction,
    XdpFlags,
)
from .errors import BpfscopeError, NotSupportedError, SyscallError
from .link import (
    LibbpfLink,
    Link,
    LinkGroup,
    TcDirection,
    TcFilterLink,
    TcMode,
    TcxLink,
    XdpLink,
    XdpMode,
    remove_stale_tc_filters,
)
from .mounts import ensure_tracefs

__all__ = ["Program", "ProgramType", "XdpMode", "XdpAction", "TcDirection", "TcMode", "TestRunResult"]


_XDP_FLAGS = {XdpMode.NATIVE: XdpFlags.DRV_MODE, XdpMode.GENERIC: XdpFlags.SKB_MODE}
_TCX_ATTACH = {TcDirection.INGRESS: AttachType.TCX_INGRESS, TcDirection.EGRESS: AttachType.TCX_EGRESS}
_TC_ATTACH_POINT = {TcDirection.INGRESS: BPF_TC_INGRESS, TcDirection.EGRESS: BPF_TC_EGRESS}
_LIBRARY_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu",
                 "/usr/lib/aarch64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib", "/usr/local/lib")


@dataclass(frozen=True)
class TestRunResult:
    """What BPF_PROG_TEST_RUN returned: the program's return code, the packet it left, and the
    kernel's average run time per repetition."""

    __test__ = False  # not a pytest test class

    retval: int
    data: bytes
    duration_ns: int

    @property
    def action(self) -> Union[XdpAction, int]:
        try:
            return XdpAction(self.retval)
        except ValueError:
            return self.retval


class Program:
    """One program of a loaded Object. Attach methods return a Link; keep it (or use `with`)."""

    def __init__(self, ptr: int, owner: object) -> None:
        self._ptr = ptr
        self._owner = owner  # keeps the bpf_object alive as long as the program is used
        self.name: str = _libbpf.bpf_program__name(ptr).decode()
        self.section: str = _libbpf.bpf_program__section_name(ptr).decode()
        raw_type = _libbpf.bpf_program__type(ptr)
        self.type: Union[ProgramType, int] = (
            ProgramType(raw_type) if raw_type in ProgramType._value2member_map_ else raw_type
        )

    @property
    def fd(self) -> int:
        fd = int(_libbpf.bpf_program__fd(self._ptr))
        if fd < 0:
            raise BpfscopeError(errno.EBADF, f"program {self.name!r} is not loaded (autoload off?)")
        return fd

    @property
    def missed_runs(self) -> int:
        """Times the kernel skipped this program at its hook, counted by the kernel from Linux 6.7 for
        tracepoints, kprobes and uprobes (another BPF program was running on that CPU: a tracepoint or
        probe that fires inside a BPF program, or one preempted on a busy CPU); 0 where it is not counted."""
        return int(_libbpf.obj_info(self.fd, _libbpf.BpfProgInfo(), f"program {self.name!r}").recursion_misses)

    def __repr__(self) -> str:
        return f"<Program {self.name} {self.section}>"

    # --- network ---

    def attach_xdp(self, iface: Union[str, int], *, mode: XdpMode = XdpMode.AUTO) -> XdpLink:
        """Attaches as an XDP link (BPF_LINK_CREATE, BPF_XDP). AUTO tries native then generic;
        `link.mode` says which ran."""
        index = iface if isinstance(iface, int) else netdev.ifindex(iface)
        name = netdev.ifname(index)
        modes = [XdpMode.NATIVE, XdpMode.GENERIC] if mode is XdpMode.AUTO else [mode]
        for candidate in modes:
            opts = _libbpf.BpfLinkCreateOpts(sz=ctypes.sizeof(_libbpf.BpfLinkCreateOpts))
            opts.flags = _XDP_FLAGS[candidate]
            fd = _libbpf.bpf_link_create(self.fd, index, AttachType.XDP, opts)
            if fd >= 0:
                return XdpLink(fd, f"xdp {self.name} on {name} ({candidate.value})", mode=candidate)
            err = -fd
            if err in (errno.EOPNOTSUPP, errno.EINVAL) and candidate is XdpMode.NATIVE and mode is XdpMode.AUTO:
                continue  # the driver has no native XDP: fall back to generic
            if err == errno.EBUSY:
                raise SyscallError(err, f"attach xdp {self.name} to {name}",
                                   "another XDP program is attached there; detach it first")
            if err in (errno.EOPNOTSUPP, errno.EINVAL) and candidate is XdpMode.NATIVE:
                raise BpfscopeError(err, f"{name} has no native XDP (its driver lacks it); attach with "
                                         "XdpMode.GENERIC, or XdpMode.AUTO to fall back to it")
            _libbpf.check(fd, f"attach xdp {self.name} to {name}", "CAP_NET_ADMIN")
        raise AssertionError("unreachable")

    def attach_tc(
        self, iface: Union[str, int], *, direction: TcDirection = TcDirection.INGRESS, mode: TcMode = TcMode.AUTO
    ) -> Union[TcxLink, TcFilterLink]:
        """Attaches a tc classifier: a tcx link where the kernel has one, else clsact + cls_bpf;
        `link.mode` says which."""
        index = iface if isinstance(iface, int) else netdev.ifindex(iface)
        name = netdev.ifname(index)
        what = f"tc {direction.value} {self.name} on {name}"
        if mode in (TcMode.AUTO, TcMode.TCX):
            opts = _libbpf.BpfLinkCreateOpts(sz=ctypes.sizeof(_libbpf.BpfLinkCreateOpts))
            fd = _libbpf.bpf_link_create(self.fd, index, _TCX_ATTACH[direction], opts)
            if fd >= 0:
                return TcxLink(fd, f"{what} (tcx)")
            if mode is TcMode.TCX or -fd not in (errno.EINVAL, errno.EOPNOTSUPP):
                _libbpf.check(fd, f"attach {what} (tcx)", "CAP_NET_ADMIN")
        remove_stale_tc_filters()
        hook = _libbpf.BpfTcHook(sz=ctypes.sizeof(_libbpf.BpfTcHook), ifindex=index,
                                 attach_point=_TC_ATTACH_POINT[direction])
        ret = _libbpf.bpf_tc_hook_create(hook)
        if ret < 0 and -ret != errno.EEXIST:
            _libbpf.check(ret, f"create clsact qdisc on {name}", "CAP_NET_ADMIN")
        tc_opts = _libbpf.BpfTcOpts(sz=ctypes.sizeof(_libbpf.BpfTcOpts), prog_fd=self.fd)
        _libbpf.check(_libbpf.bpf_tc_attach(hook, tc_opts), f"attach {what} (clsact)", "CAP_NET_ADMIN")
        return TcFilterLink(hook, tc_opts, f"{what} (clsact)")

    # --- tracing ---

    def attach_tracepoint(self, category: str, name: str) -> LibbpfLink:
        """Attaches to tracepoint `category:name` (e.g. "syscalls", "sys_enter_openat")."""
        ensure_tracefs()
        what = f"tracepoint {category}:{name}"
        with _libbpf.captured_log():
            ptr = _libbpf.bpf_program__attach_tracepoint(self._ptr, category.encode(), name.encode())
        if not ptr and ctypes.get_errno() == errno.ENOENT:
            raise NotSupportedError(what, "no such tracepoint on this kernel")
        return LibbpfLink(_libbpf.check_ptr(ptr, f"attach {self.name} to {what}", "CAP_PERFMON"), what)

    def attach_uprobe(
        self,
        target: str,
        symbol: Optional[str] = None,
        *,
        offset: int = 0,
        pid: Optional[int] = None,
        retprobe: bool = False,
    ) -> LibbpfLink:
        """Attaches at `symbol`+`offset` of a binary or library (a path, or a name like "libc"),
        on entry or (retprobe=True) on return; only in process `pid` when given."""
        path = resolve_binary(target)
        opts = _libbpf.BpfUprobeOpts(sz=ctypes.sizeof(_libbpf.BpfUprobeOpts), retprobe=retprobe)
        if symbol:
            opts.func_name = symbol.encode()
        kind = "uretprobe" if retprobe else "uprobe"
        what = f"{kind} {path}:{symbol or hex(offset)}" + (f" pid {pid}" if pid is not None else "")
        with _libbpf.captured_log():  # errno says what failed; keep libbpf's own lines off stderr
            ptr = _libbpf.bpf_program__attach_uprobe_opts(
                self._ptr, -1 if pid is None else pid, path.encode(), offset, opts
            )
        if not ptr:
            err = ctypes.get_errno() or errno.EINVAL
            if err == errno.ENOENT and symbol:
                raise BpfscopeError(err, f"symbol {symbol!r} not found in {path}")
            if err == errno.ESRCH:
                raise BpfscopeError(err, f"no process with pid {pid}")
            raise _libbpf.error(err, f"attach {self.name} as {what}", "CAP_PERFMON")
        return LibbpfLink(ptr, what)

    def attach_perf_event(self, *, frequency: int = 99, cpus: Optional[list[int]] = None) -> LinkGroup:
        """Runs the program `frequency` times a second on each CPU (software cpu-clock event)."""
        links: list[Link] = []
        try:
            for cpu in cpus if cpus is not None else online_cpus():
                attr = struct.pack("=IIQQQQQII", PERF_TYPE_SOFTWARE, PERF_ATTR_SIZE_VER0,
                                   PERF_COUNT_SW_CPU_CLOCK, frequency, 0, 0, PERF_ATTR_FREQ, 0, 0)
                attr = attr.ljust(128, b"\0")
                pfd = _libbpf._syscall(NR_PERF_EVENT_OPEN, attr, -1, cpu, -1, PERF_FLAG_FD_CLOEXEC)
                if pfd < 0:
                    raise _libbpf.error(ctypes.get_errno(), f"perf_event_open cpu-clock on cpu {cpu}",
                                        "CAP_PERFMON")
                ptr = _libbpf.bpf_program__attach_perf_event(self._ptr, pfd)
                if not ptr:
                    err = ctypes.get_errno()
                    os.close(pfd)
                    raise _libbpf.error(err, f"attach {self.name} to perf event on cpu {cpu}", "CAP_PERFMON")
                links.append(LibbpfLink(ptr, f"perf cpu-clock cpu {cpu}"))
        except BaseException:
            for link in links:
                link.close()
            raise
        return LinkGroup(links, f"perf event {self.name} at {frequency} Hz")

    # --- testing ---

    def test_run(
        self, data: bytes, *, repeat: int = 1, flags: int = 0, batch_size: int = 0, ctx: Optional[bytes] = None,
    ) -> TestRunResult:
        """Runs an XDP or tc program on `data` (BPF_PROG_TEST_RUN); `repeat` times for benchmarks.

        `flags` are BPF_F_TEST_* (BPF_F_TEST_XDP_LIVE_FRAMES = 2 sends what the program returns
        XDP_TX or XDP_REDIRECT for, out of the interface `ctx` names); `batch_size` is how many live
        frames go per batch (0: the kernel's 64); `ctx` is the context given to the program, for XDP
        a struct xdp_md (data_end = len(data), ingress_ifindex, rx_queue_index)."""
        data_in = ctypes.create_string_buffer(bytes(data), len(data))
        data_out = ctypes.create_string_buffer(len(data) + 4096)  # room for programs that grow the packet
        opts = _libbpf.BpfTestRunOpts(sz=ctypes.sizeof(_libbpf.BpfTestRunOpts))
        opts.data_in = ctypes.addressof(data_in)
        opts.data_size_in = len(data)
        if not flags & BPF_F_TEST_XDP_LIVE_FRAMES:  # the kernel refuses data_out with live frames
            opts.data_out = ctypes.addressof(data_out)
            opts.data_size_out = len(data_out)
        opts.repeat = repeat
        opts.flags = flags
        opts.batch_size = batch_size
        ctx_in = None
        if ctx is not None:
            ctx_in = ctypes.create_string_buffer(bytes(ctx), len(ctx))
            opts.ctx_in = ctypes.addressof(ctx_in)
            opts.ctx_size_in = len(ctx)
        _libbpf.check(_libbpf.bpf_prog_test_run_opts(self.fd, opts), f"test_run {self.name}")
        return TestRunResult(opts.retval, data_out.raw[: opts.data_size_out], opts.duration)


def online_cpus() -> list[int]:
    """CPU numbers from /sys/devices/system/cpu/online ("0-3,6")."""
    with open("/sys/devices/system/cpu/online") as f:
        spec = f.read().strip()
    cpus: list[int] = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        cpus.extend(range(int(low), int(high or low) + 1))
    return cpus


def resolve_binary(target: str) -> str:
    """A path as given, or a library name ("libc", "libssl.so.3") looked up where the loader looks."""
    if os.sep in target:
        if not os.path.isfile(target):
            raise BpfscopeError(errno.ENOENT, f"no binary or library at {target}")
        return os.path.realpath(target)
    name = target if target.startswith("lib") else f"lib{target}"
    for directory in _LIBRARY_DIRS:
        # libc.so.6 before libc.so: the unversioned name is often a linker script, not ELF.
        candidates = sorted(glob.glob(os.path.join(directory, f"{name}.so*")) +
                            glob.glob(os.path.join(directory, f"{name}-*.so*")), key=lambda p: (p.endswith(".so"), p))
        for candidate in candidates:
            if _is_elf(candidate):
                return os.path.realpath(candidate)
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(directory, target)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return os.path.realpath(candidate)
    raise BpfscopeError(errno.ENOENT, f"no binary or library named {target!r} (give a path)")


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False
