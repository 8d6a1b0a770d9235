"""A loaded program and the ways to attach it: from its section name (`attach()`, as libbpf does), or by an
explicit method per kind of hook, which takes what the section cannot say (an interface, a cgroup, a
binary); and test_run, which runs a program on given bytes without attaching it. Each family's machinery
is in bpfscope._attach."""

from __future__ import annotations

import ctypes
import errno
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Union

from . import _libbpf
from ._attach import auto, cgroup, interface, iterators, net, perf, tracing, uprobes
from ._attach.net import Netns
from ._attach.perf import PerfEvent, online_cpus
from ._attach.uprobes import resolve_binary
from ._uapi import (
    BPF_F_TEST_XDP_LIVE_FRAMES,
    AttachType,
    CgroupIterOrder,
    HardwareEvent,
    NetfilterFamily,
    NetfilterHook,
    ProgramType,
    SoftwareEvent,
    XdpAction,
)
from .errors import BpfscopeError
from .link import (
    FdLink,
    IterLink,
    LibbpfLink,
    Link,
    LinkGroup,
    SocketFilterLink,
    TcDirection,
    TcFilterLink,
    TcMode,
    TcxLink,
    XdpLink,
    XdpMode,
)

if TYPE_CHECKING:
    from .maps import Map

__all__ = [
    "Program", "ProgramType", "AttachType", "XdpMode", "XdpAction", "TcDirection", "TcMode", "TestRunResult",
    "CgroupIterOrder", "HardwareEvent", "SoftwareEvent", "PerfEvent", "NetfilterFamily",
    "NetfilterHook", "Netns", "online_cpus", "resolve_binary",
]


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
    """One program of a loaded Object. Attach methods return a Link; keep it (or use `with`): the hook goes
    with the link's last fd, so a process that ends, killed or not, leaves nothing attached."""

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

    @property
    def autoattaches(self) -> bool:
        """Whether attach() can attach this program from its section alone (what Object.attach_all attaches)."""
        return auto.autoattaches(self)

    def __repr__(self) -> str:
        return f"<Program {self.name} {self.section}>"

    def attach(self) -> Link:
        """Attaches where the section says, as libbpf's bpf_program__attach does: "kprobe/do_unlinkat",
        "tp_btf/sched_process_exec", "usdt/path:provider:name", "iter/task", "lsm/file_open", ... A section
        that does not name its target (SEC("xdp"), SEC("uprobe"), SEC("cgroup/connect4")) raises one line
        naming the method that takes it."""
        return auto.attach(self)

    # --- network ---

    def attach_xdp(self, iface: Union[str, int], *, mode: XdpMode = XdpMode.AUTO) -> XdpLink:
        """Attaches as an XDP link (BPF_LINK_CREATE, BPF_XDP). AUTO tries native then generic;
        `link.mode` says which ran."""
        return interface.xdp(self, iface, mode=mode)

    def attach_tc(
        self, iface: Union[str, int], *, direction: TcDirection = TcDirection.INGRESS, mode: TcMode = TcMode.AUTO
    ) -> Union[TcxLink, TcFilterLink]:
        """Attaches a tc classifier: a tcx link where the kernel has one, else clsact + cls_bpf;
        `link.mode` says which."""
        return interface.tc(self, iface, direction=direction, mode=mode)

    def attach_cgroup(
        self, path: Union[str, os.PathLike[str]], *, attach_type: Optional[AttachType] = None
    ) -> FdLink:
        """Attaches a cgroup program (cgroup_skb, cgroup/connect4, sockops, cgroup/sysctl, cgroup/dev,
        cgroup/getsockopt, lsm_cgroup, ...) to a cgroup v2 directory: `path` is absolute or relative to where
        cgroup v2 is mounted. The hook is the one the section names (the program's expected attach type),
        or `attach_type` (AttachType.CGROUP_INET_EGRESS for a SEC("cgroup/skb") program)."""
        return cgroup.attach(self, path, attach_type=attach_type)

    def attach_socket(self, sock: Union[socket.socket, int]) -> SocketFilterLink:
        """Attaches a socket filter to one socket (SO_ATTACH_BPF); closing the link detaches it."""
        return net.socket_filter(self, sock)

    def attach_netns(self, netns: Netns = None) -> LibbpfLink:
        """Attaches an sk_lookup or flow_dissector program to a network namespace: a name `ip netns` made,
        a path (/proc/<pid>/ns/net), an open fd, or None for this process's."""
        return net.netns(self, netns)

    def attach_sockmap(self, sock_map: Map, *, attach_type: Optional[AttachType] = None) -> Link:
        """Attaches an sk_msg or sk_skb program to a sockmap or sockhash: a link from Linux 6.10, held by the
        map (BPF_PROG_ATTACH) before. The hook is the section's (sk_msg: SK_MSG_VERDICT,
        sk_skb/stream_verdict: SK_SKB_STREAM_VERDICT, ...) or `attach_type`."""
        return net.sockmap(self, sock_map, attach_type=attach_type)

    def attach_netfilter(
        self, *, family: NetfilterFamily, hook: NetfilterHook, priority: int, defrag: bool = False,
        netns: Netns = None,
    ) -> FdLink:
        """Attaches a netfilter program (Linux 6.4+; BPF_LINK_CREATE, BPF_NETFILTER) at `hook` of the IPv4 or
        IPv6 stack of a network namespace (this process's by default), ordered by `priority` among the
        hooks there; `defrag` has the kernel reassemble fragments first (Linux 6.6+)."""
        return net.netfilter(self, family=family, hook=hook, priority=priority, defrag=defrag, ns=netns)

    # --- kernel tracing ---

    def attach_tracepoint(self, category: str, name: str) -> LibbpfLink:
        """Attaches to tracepoint `category:name` (e.g. "syscalls", "sys_enter_openat")."""
        return tracing.tracepoint(self, category, name)

    def attach_raw_tracepoint(self, name: str) -> LibbpfLink:
        """Attaches a raw_tp program to the tracepoint `name` ("sys_enter", "sched_switch")."""
        return tracing.raw_tracepoint(self, name)

    def attach_tracing(self, *, cookie: int = 0) -> LibbpfLink:
        """Attaches an fentry, fexit, fmod_ret or tp_btf program to the function or tracepoint it was loaded
        for (its section, or ProgramSpec.set_attach_target); `cookie` is what bpf_get_attach_cookie returns."""
        return tracing.tracing(self, cookie=cookie)

    def attach_freplace(self, target: Optional[Program] = None, function: Optional[str] = None) -> LibbpfLink:
        """Replaces global function `function` of BPF program `target` with this freplace program; with
        neither, the target it was loaded for (ProgramSpec.set_attach_target, which freplace needs)."""
        return tracing.freplace(self, target, function)

    def attach_lsm(self) -> LibbpfLink:
        """Attaches a BPF LSM program to the hook its section names (SEC("lsm/file_open"))."""
        return tracing.lsm(self)

    def attach_kprobe(
        self, symbol: Optional[str] = None, *, offset: int = 0, address: Optional[int] = None,
        retprobe: bool = False, cookie: int = 0,
    ) -> LibbpfLink:
        """Attaches at kernel function `symbol` + `offset`, or at `address`; on return with retprobe=True."""
        return tracing.kprobe(self, symbol, offset=offset, address=address, retprobe=retprobe, cookie=cookie)

    def attach_kprobe_multi(
        self, pattern: Optional[str] = None, *, symbols: Sequence[str] = (), addresses: Sequence[int] = (),
        cookies: Sequence[int] = (), retprobe: bool = False,
    ) -> LibbpfLink:
        """Attaches a kprobe.multi program to every kernel function `pattern` matches ("tcp_*"), or to the
        `symbols` or `addresses` given, in one link (Linux 5.18+, CONFIG_FPROBE)."""
        return tracing.kprobe_multi(self, pattern, symbols=symbols, addresses=addresses, cookies=cookies,
                                    retprobe=retprobe)

    def attach_iter(
        self, *, map: Optional[Map] = None, pid: Optional[int] = None, tid: Optional[int] = None,
        cgroup: Union[str, os.PathLike[str], None] = None, order: CgroupIterOrder = CgroupIterOrder.SELF_ONLY,
    ) -> IterLink:
        """Attaches an iterator; `link.read()` runs it and returns what it wrote. It walks everything of its
        kind, or one map (iter/bpf_map_elem needs it), one process's or thread's tasks and files (Linux 6.1+),
        or the cgroups from `cgroup` in `order`."""
        return iterators.attach(self, walk_map=map, pid=pid, tid=tid, cgroup=cgroup, order=order)

    def attach_perf_event(
        self, *, event: PerfEvent = SoftwareEvent.CPU_CLOCK, frequency: Optional[int] = None,
        period: Optional[int] = None, cpus: Optional[Sequence[int]] = None, pid: Optional[int] = None,
        cookie: int = 0,
    ) -> LinkGroup:
        """Runs a perf_event program on a software or hardware counter (PERF_TYPE_SOFTWARE, PERF_TYPE_HARDWARE),
        `frequency` times a second (99 by default) or once every `period` events. One event per CPU (`cpus`,
        or every online one), or one following thread `pid` wherever it runs (on `cpus` only, if given)."""
        return perf.attach(self, event=event, frequency=frequency, period=period, cpus=cpus, pid=pid, cookie=cookie)

    # --- user-space tracing ---

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
        return uprobes.uprobe(self, target, symbol, offset=offset, pid=pid, retprobe=retprobe)

    def attach_uprobe_multi(
        self, target: str, pattern: str, *, pid: Optional[int] = None, retprobe: bool = False,
        cookies: Sequence[int] = (),
    ) -> FdLink:
        """Attaches a uprobe.multi program to every function of `target` that `pattern` matches, in one link
        (Linux 6.6+; BPF_LINK_CREATE, BPF_TRACE_UPROBE_MULTI)."""
        return uprobes.uprobe_multi(self, target, pattern, pid=pid, retprobe=retprobe, cookies=cookies)

    def attach_usdt(
        self, target: Optional[str], provider: str, name: str, *, pid: Optional[int] = None, cookie: int = 0
    ) -> LibbpfLink:
        """Attaches a BPF_USDT program to USDT probe `provider`:`name` of a binary or library (or, with
        target None, of process `pid`'s executable); only in process `pid` when given. Probes guarded by a
        semaphore fire while the link holds it up."""
        return uprobes.usdt(self, target, provider, name, pid=pid, cookie=cookie)

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
