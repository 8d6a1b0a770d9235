"""What the kernel has loaded, as bpftool shows it: programs, maps, links, pins and network attachments,
and a verifier's verdict on an object file.

Objects are found by id (BPF_*_GET_NEXT_ID, which needs CAP_SYS_ADMIN) and described by
BPF_OBJ_GET_INFO_BY_FD; who holds them comes from /proc/*/fdinfo, as `bpftool -p` shows (Debian's
bpftool is built without it). cls_bpf filters are listed through rtnetlink, because no bpf() command
lists them. Map keys and values are typed by the BTF the kernel keeps for each map."""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np

from . import _libbpf, netdev
from ._netlink import TCMSG, RouteSocket, attributes
from ._uapi import (
    BPF_LOG_LEVEL2,
    BPF_OBJ_NAME_LEN,
    BPF_PROG_QUERY,
    RTM_GETTFILTER,
    RTM_NEWTFILTER,
    TC_H_CLSACT_EGRESS,
    TC_H_CLSACT_INGRESS,
    TCA_BPF_ID,
    TCA_KIND,
    TCA_OPTIONS,
    AttachType,
    PerfEventLinkType,
)
from .btf import Btf, Kind, TypeCodec
from .errors import BpfscopeError, SyscallError, VerifierError
from .maps import Map, MapType, NoBatchLookup, lookup_batches, possible_cpus
from .mounts import BPFFS, mounts
from .object import ObjectSpec
from .program import XdpMode

__all__ = [
    "Holder",
    "LinkInfo",
    "MapInfo",
    "NetAttachment",
    "Pin",
    "ProgramInfo",
    "Verdict",
    "VerifiedProgram",
    "links",
    "map_entries",
    "maps",
    "net_attachments",
    "open_map",
    "pins",
    "programs",
    "verify",
]


# libbpf 1.1 has no names for what Linux 6.4 and later added; spelled as the kernel's enums have them.
_NEWER_NAMES = {
    "prog": {32: "netfilter"},
    "map": {33: "arena"},
    "link": {10: "netfilter", 11: "tcx", 12: "uprobe_multi", 13: "netkit", 14: "sockmap"},
    "attach": {44: "struct_ops", 45: "netfilter", 46: "tcx_ingress", 47: "tcx_egress", 48: "trace_uprobe_multi",
               49: "cgroup_unix_connect", 50: "cgroup_unix_sendmsg", 51: "cgroup_unix_recvmsg",
               52: "cgroup_unix_getpeername", 53: "cgroup_unix_getsockname", 54: "netkit_primary",
               55: "netkit_peer", 56: "trace_kprobe_session", 57: "trace_uprobe_session"},
}
_LIBBPF_NAMES = {
    "prog": _libbpf.libbpf_bpf_prog_type_str,
    "map": _libbpf.libbpf_bpf_map_type_str,
    "link": _libbpf.libbpf_bpf_link_type_str,
    "attach": _libbpf.libbpf_bpf_attach_type_str,
}
# Which hook a tcx or netkit link's attach type is, as `inspect net` names hooks.
_HOOKS = {"tcx_ingress": "tcx/ingress", "tcx_egress": "tcx/egress", "netkit_primary": "netkit/primary",
          "netkit_peer": "netkit/peer"}
_NAME_BUFFER = 4096  # PATH_MAX: a uprobe's binary is the longest name a link reports

_NOUNS = {"prog": "program", "map": "map", "link": "link"}
_NEXT_ID = {"prog": _libbpf.bpf_prog_get_next_id, "map": _libbpf.bpf_map_get_next_id,
            "link": _libbpf.bpf_link_get_next_id}
_FD_BY_ID = {"prog": _libbpf.bpf_prog_get_fd_by_id, "map": _libbpf.bpf_map_get_fd_by_id,
             "link": _libbpf.bpf_link_get_fd_by_id}
# /proc/<pid>/fd link targets of BPF objects (older kernels call a link "bpf_link"), and the fdinfo keys
# that name them.
_FD_KINDS = {"anon_inode:bpf-prog": "prog", "anon_inode:bpf-map": "map", "anon_inode:bpf-link": "link",
             "anon_inode:bpf_link": "link"}
_FDINFO_IDS = {"prog_id": "prog", "map_id": "map", "link_id": "link"}

_HASH_TYPES = (MapType.HASH, MapType.PERCPU_HASH, MapType.LRU_HASH, MapType.LRU_PERCPU_HASH)
_PER_CPU_HASH_TYPES = (MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH)
# A hash map's entries are counted by reading it in batches: only when a full map is at most this many
# bytes of keys and values to copy (131072 entries of a 48-byte flow take 6 MiB, a few milliseconds).
_COUNT_BUDGET = 64 << 20
DEFAULT_CHUNK = 4096  # entries per bpf_map_lookup_batch when dumping a map

# The fields of struct bpf_xdp_query_opts that give each mode's program.
_XDP_MODES = (("drv_prog_id", XdpMode.NATIVE.value), ("skb_prog_id", XdpMode.GENERIC.value),
              ("hw_prog_id", "offload"))
_CLSACT_PARENTS = (("clsact/ingress", TC_H_CLSACT_INGRESS), ("clsact/egress", TC_H_CLSACT_EGRESS))
_TCX_HOOKS = (("tcx/ingress", AttachType.TCX_INGRESS), ("tcx/egress", AttachType.TCX_EGRESS))
_BPF_FS = "bpf"


def _type_name(kind: str, value: int) -> str:
    """libbpf's name for a program, map, link or attach type ("sched_cls", "lru_hash"), as bpftool prints it."""
    raw = _LIBBPF_NAMES[kind](value)
    return raw.decode() if raw else _NEWER_NAMES[kind].get(value, str(value))


# --- objects by id ---


def _ids(kind: str) -> Iterator[int]:
    current = ctypes.c_uint32(0)
    while True:
        ret = _NEXT_ID[kind](current.value, ctypes.byref(current))
        if ret == -errno.ENOENT:
            return
        _libbpf.check(ret, f"list {_NOUNS[kind]}s", "CAP_SYS_ADMIN")
        yield current.value


def _fd_by_id(kind: str, obj_id: int) -> Optional[int]:
    """An fd of the object, or None if there is none with that id (any more)."""
    fd = _FD_BY_ID[kind](obj_id)
    if fd == -errno.ENOENT:
        return None
    return _libbpf.check(fd, f"open {_NOUNS[kind]} {obj_id}", "CAP_SYS_ADMIN")


def _each(kind: str, ids: Optional[Sequence[int]]) -> Iterator[int]:
    """An fd of each object asked for (every one when `ids` is None), closed when the next is opened.
    An id asked for that does not exist is an error; one that vanishes while we list is skipped."""
    for obj_id in ids if ids is not None else list(_ids(kind)):
        fd = _fd_by_id(kind, obj_id)
        if fd is None:
            if ids is not None:
                raise BpfscopeError(errno.ENOENT, f"no {_NOUNS[kind]} with id {obj_id}")
            continue
        try:
            yield fd
        finally:
            os.close(fd)


def _fdinfo(path: str) -> dict[str, str]:
    with open(path) as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def _memlock(fd: int) -> Optional[int]:
    """Bytes the kernel charges for the object, as its fdinfo says (bpftool's bytes_memlock)."""
    value = _fdinfo(f"/proc/self/fdinfo/{fd}").get("memlock")
    return int(value) if value is not None else None


def _fd_kind(fd: int) -> Optional[str]:
    return _FD_KINDS.get(os.readlink(f"/proc/self/fd/{fd}"))


class _Cache:
    """BTF and program names looked up once per listing: many maps and programs share one BTF object."""

    def __init__(self) -> None:
        self._btf: dict[int, Btf] = {}
        self._names: dict[int, str] = {}

    def btf(self, btf_id: int) -> Btf:
        if btf_id not in self._btf:
            self._btf[btf_id] = Btf(_libbpf.kernel_btf(btf_id))
        return self._btf[btf_id]

    def program_name(self, fd: int, info: _libbpf.BpfProgInfo) -> str:
        """The program's whole name: the kernel keeps 15 characters, its BTF the function's full name
        (bpftool does the same)."""
        name = str(info.name.decode())
        if len(name) < BPF_OBJ_NAME_LEN - 1 or not info.btf_id or not info.nr_func_info:
            return name
        record = (ctypes.c_uint32 * 2)()  # struct bpf_func_info: insn_off, type_id
        query = _libbpf.BpfProgInfo(nr_func_info=1, func_info_rec_size=ctypes.sizeof(record),
                                    func_info=ctypes.addressof(record))
        _libbpf.obj_info(fd, query, f"program {info.id}")
        if not query.nr_func_info or not record[1]:
            return name  # func_info withheld (kernel.kptr_restrict)
        return self.btf(info.btf_id)[int(record[1])].name

    def program_name_by_id(self, prog_id: int) -> str:
        if prog_id not in self._names:
            fd = _fd_by_id("prog", prog_id)
            if fd is None:
                return ""
            try:
                info = _libbpf.obj_info(fd, _libbpf.BpfProgInfo(), f"program {prog_id}")
                self._names[prog_id] = self.program_name(fd, info)
            finally:
                os.close(fd)
        return self._names[prog_id]


# --- who holds what ---


@dataclass(frozen=True)
class Holder:
    """A process with the object open (for a program: the program or a link to it)."""

    pid: int
    comm: str


def _holders() -> dict[tuple[str, int], tuple[Holder, ...]]:
    """("prog" | "map" | "link", id) → the processes that hold it, from each BPF fd's fdinfo. A link's
    fdinfo names its program too, so a process that keeps only the link counts for the program."""
    found: dict[tuple[str, int], dict[int, str]] = defaultdict(dict)
    own = os.getpid()  # this process opens every object to describe it
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        pid = int(entry.name)
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            comm = ""
            for fd in fds:
                if os.readlink(f"/proc/{pid}/fd/{fd}") not in _FD_KINDS:
                    continue
                comm = comm or _read_text(f"/proc/{pid}/comm")
                for key, value in _fdinfo(f"/proc/{pid}/fdinfo/{fd}").items():
                    if key in _FDINFO_IDS:
                        found[(_FDINFO_IDS[key], int(value))][pid] = comm
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # the process or fd is gone, or is not ours to read
    return {key: tuple(Holder(pid, comm) for pid, comm in sorted(pids.items())) for key, pids in found.items()}


def _read_text(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


# --- links ---


@dataclass(frozen=True)
class LinkInfo:
    """One BPF link. `target` says where it attaches, for people ("xdp on eth1", "tracepoint
    sys_enter_openat"); `details` says the same for scripts (ifindex, attach_type, tp_name, path...)."""

    id: int
    type: str
    prog_id: int
    target: str
    details: dict[str, Union[int, str, None]]  # None: the kernel did not say
    pids: tuple[Holder, ...]


def _ifname(ifindex: int) -> str:
    """The interface's name in this namespace; a link's interface may be in another one."""
    try:
        return socket.if_indextoname(ifindex)
    except OSError:
        return f"ifindex {ifindex}"


def _named_link(fd: int, info: _libbpf.BpfLinkInfo) -> str:
    """The name a link reports only into a buffer of ours: a tracepoint, a probed function or binary."""
    buffer = ctypes.create_string_buffer(_NAME_BUFFER)
    query = _libbpf.BpfLinkInfo()
    kind = _type_name("link", info.type)
    if kind == "perf_event":
        query.u.perf_event.type = info.u.perf_event.type
        query.u.perf_event.u.probe.name = ctypes.addressof(buffer)
        query.u.perf_event.u.probe.name_len = len(buffer)
    elif kind == "uprobe_multi":
        query.u.uprobe_multi.path = ctypes.addressof(buffer)
        query.u.uprobe_multi.path_size = len(buffer)
    else:  # raw_tracepoint, iter
        query.u.named.name = ctypes.addressof(buffer)
        query.u.named.name_len = len(buffer)
    _libbpf.obj_info(fd, query, f"link {info.id}")
    return buffer.value.decode(errors="replace")


def _link_target(fd: int, info: _libbpf.BpfLinkInfo) -> tuple[str, dict[str, Union[int, str, None]]]:
    kind = _type_name("link", info.type)
    u = info.u
    if kind == "xdp":
        name = _ifname(u.target.ifindex)
        return f"xdp on {name}", {"ifindex": u.target.ifindex, "ifname": name}
    if kind in ("tcx", "netkit"):
        name, attach = _ifname(u.target.ifindex), _type_name("attach", u.target.attach_type)
        return (f"{_HOOKS.get(attach, attach)} on {name}",
                {"ifindex": u.target.ifindex, "ifname": name, "attach_type": attach})
    if kind == "perf_event":
        if u.perf_event.type not in PerfEventLinkType._value2member_map_:  # before 6.6 it says nothing of the event
            return "perf_event (its kernel describes these from Linux 6.6)", {"perf_type": None}
        perf = PerfEventLinkType(u.perf_event.type).name.lower()
        if perf == "event":
            event = u.perf_event.u.event
            return (f"perf event type {event.type} config {event.config}",
                    {"perf_type": perf, "event_type": event.type, "config": event.config})
        name, offset = _named_link(fd, info), u.perf_event.u.probe.offset
        if perf == "tracepoint":
            return f"tracepoint {name}", {"perf_type": perf, "tp_name": name}
        where = f"{name}+{offset:#x}" if offset else name
        key = "path" if perf in ("uprobe", "uretprobe") else "func"
        return f"{perf} {where}", {"perf_type": perf, key: name, "offset": offset}
    if kind == "raw_tracepoint":
        name = _named_link(fd, info)
        return f"raw_tracepoint {name}", {"tp_name": name}
    if kind == "iter":
        name = _named_link(fd, info)
        return f"iter {name}", {"target_name": name}
    if kind == "uprobe_multi":
        path, count = _named_link(fd, info), u.uprobe_multi.count
        return f"uprobe_multi {path} ({count} offsets)", {"path": path, "count": count, "pid": u.uprobe_multi.pid}
    if kind == "kprobe_multi":
        count = u.kprobe_multi.count
        return f"kprobe_multi ({count} functions)", {"count": count}
    if kind == "tracing":
        tracing = u.tracing
        attach = _type_name("attach", tracing.attach_type)
        return (f"{attach} btf id {tracing.target_btf_id}",
                {"attach_type": attach, "target_obj_id": tracing.target_obj_id,
                 "target_btf_id": tracing.target_btf_id})
    if kind == "cgroup":
        attach = _type_name("attach", u.cgroup.attach_type)
        return f"{attach} on cgroup {u.cgroup.cgroup_id}", {"attach_type": attach, "cgroup_id": u.cgroup.cgroup_id}
    if kind == "netns":
        attach = _type_name("attach", u.target.attach_type)
        return f"{attach} on netns {u.target.ifindex}", {"attach_type": attach, "netns_ino": u.target.ifindex}
    if kind in ("struct_ops", "sockmap"):
        return f"{kind} map {u.target.ifindex}", {"map_id": u.target.ifindex}
    if kind == "netfilter":
        nf = u.netfilter
        return (f"netfilter pf {nf.pf} hook {nf.hooknum} priority {nf.priority}",
                {"pf": nf.pf, "hooknum": nf.hooknum, "priority": nf.priority})
    return kind, {}


def _link(fd: int, held: dict[tuple[str, int], tuple[Holder, ...]]) -> LinkInfo:
    info = _libbpf.obj_info(fd, _libbpf.BpfLinkInfo(), "link")
    target, details = _link_target(fd, info)
    return LinkInfo(info.id, _type_name("link", info.type), info.prog_id, target, details,
                    held.get(("link", info.id), ()))


def _links(ids: Optional[Sequence[int]], held: dict[tuple[str, int], tuple[Holder, ...]]) -> list[LinkInfo]:
    return [_link(fd, held) for fd in _each("link", ids)]


def links(ids: Optional[Sequence[int]] = None) -> list[LinkInfo]:
    """Every BPF link (or those with `ids`), with where each attaches and who holds it."""
    return _links(ids, _holders())


# --- network attachments ---


@dataclass(frozen=True)
class NetAttachment:
    """A program on an interface's XDP, tcx or clsact hook. `link_id` is None where no BPF link holds
    it (XDP attached through netlink, a cls_bpf filter): such a program stays when its loader exits."""

    ifindex: int
    ifname: str
    hook: str  # "xdp", "tcx/ingress", "tcx/egress", "clsact/ingress", "clsact/egress"
    prog_id: int
    prog_name: str
    mode: Optional[str] = None  # XDP: "native", "generic" or "offload"
    link_id: Optional[int] = None
    priority: Optional[int] = None  # cls_bpf: the filter's priority and handle
    handle: Optional[int] = None


def _cls_bpf_filters(ifindex: int, parent: int) -> list[tuple[int, int, int]]:
    """(prog id, priority, handle) of each cls_bpf filter under `parent`, from an RTM_GETTFILTER dump."""
    request = TCMSG.pack(socket.AF_UNSPEC, ifindex, 0, parent, 0)
    with RouteSocket() as sock:
        replies = sock.request(RTM_GETTFILTER, request, dump=True, what=f"list tc filters on {_ifname(ifindex)}")
    found: list[tuple[int, int, int]] = []
    for message in replies:
        if message.type != RTM_NEWTFILTER:
            continue
        _family, _ifindex, handle, _parent, info = TCMSG.unpack_from(message.body)
        attrs = attributes(message.body, TCMSG.size)
        options = attributes(attrs.get(TCA_OPTIONS, b""))
        # each chain's first message names the classifier only: it has no program id
        if attrs.get(TCA_KIND) == b"bpf\0" and TCA_BPF_ID in options:
            found.append((struct.unpack_from("=I", options[TCA_BPF_ID])[0], info >> 16, handle))
    return found


def _tcx_programs(ifindex: int, attach_type: int) -> list[tuple[int, int]]:
    """(prog id, link id) of each program on a tcx hook, in the order they run (BPF_PROG_QUERY)."""
    attr = _libbpf.BpfProgQueryAttr(target=ifindex, attach_type=attach_type)
    ret = _libbpf.bpf(BPF_PROG_QUERY, attr)
    if ret == -errno.EINVAL:
        return []  # a kernel before 6.6: no tcx
    _libbpf.check(ret, f"query tcx on {_ifname(ifindex)}", "CAP_NET_ADMIN")
    while attr.count:
        prog_ids, link_ids = (ctypes.c_uint32 * attr.count)(), (ctypes.c_uint32 * attr.count)()
        attr = _libbpf.BpfProgQueryAttr(target=ifindex, attach_type=attach_type, count=len(prog_ids),
                                        prog_ids=ctypes.addressof(prog_ids), link_ids=ctypes.addressof(link_ids))
        ret = _libbpf.bpf(BPF_PROG_QUERY, attr)
        if ret != -errno.ENOSPC:  # ENOSPC: one was attached between the two queries
            _libbpf.check(ret, f"query tcx on {_ifname(ifindex)}", "CAP_NET_ADMIN")
            return list(zip(prog_ids[: attr.count], link_ids[: attr.count]))
    return []


def _net(iface: Optional[str], cache: _Cache, link_list: Sequence[LinkInfo]) -> list[NetAttachment]:
    xdp_links = {(link.details["ifindex"], link.prog_id): link.id for link in link_list if link.type == "xdp"}
    interfaces = socket.if_nameindex()
    if iface is not None:
        interfaces = [(index, name) for index, name in interfaces if name == iface]
        if not interfaces:
            netdev.ifindex(iface)  # raises InterfaceNotFoundError naming those that exist
    found: list[NetAttachment] = []
    for index, name in interfaces:
        opts = _libbpf.BpfXdpQueryOpts(sz=ctypes.sizeof(_libbpf.BpfXdpQueryOpts))
        _libbpf.check(_libbpf.bpf_xdp_query(index, 0, opts), f"query xdp on {name}", "CAP_NET_ADMIN")
        for attr, mode in _XDP_MODES:
            prog_id = getattr(opts, attr)
            if prog_id:
                found.append(NetAttachment(index, name, "xdp", prog_id, cache.program_name_by_id(prog_id), mode,
                                           xdp_links.get((index, prog_id))))
        for hook, attach_type in _TCX_HOOKS:
            for prog_id, link_id in _tcx_programs(index, attach_type):
                found.append(NetAttachment(index, name, hook, prog_id, cache.program_name_by_id(prog_id),
                                           link_id=link_id or None))
        for hook, parent in _CLSACT_PARENTS:
            for prog_id, priority, handle in _cls_bpf_filters(index, parent):
                found.append(NetAttachment(index, name, hook, prog_id, cache.program_name_by_id(prog_id),
                                           priority=priority, handle=handle))
    return found


def net_attachments(iface: Optional[str] = None) -> list[NetAttachment]:
    """Programs on the XDP, tcx and clsact hooks of each interface in this network namespace (or of
    `iface`): bpf_xdp_query, BPF_PROG_QUERY for tcx, and an rtnetlink dump for cls_bpf filters."""
    return _net(iface, _Cache(), _links(None, {}))


# --- programs ---


@dataclass(frozen=True)
class ProgramInfo:
    """One loaded program, as `bpftool prog show` has it, with where it is attached and who holds it.
    `run_cnt` and `run_time_ns` are None while BPF stats are off (kernel.bpf_stats_enabled) and
    nothing was counted."""

    id: int
    type: str
    name: str
    tag: str
    loaded_at: int  # seconds since the epoch
    uid: int
    bytes_xlated: int
    bytes_jited: int
    memlock: Optional[int]
    verified_insns: Optional[int]  # None: a kernel before 5.16 does not count them
    map_ids: tuple[int, ...]
    btf_id: int
    run_cnt: Optional[int]
    run_time_ns: Optional[int]
    attached: tuple[str, ...]
    pids: tuple[Holder, ...]


def _stats_enabled() -> bool:
    try:
        return _read_text("/proc/sys/kernel/bpf_stats_enabled") == "1"
    except FileNotFoundError:
        return False


def _map_ids(fd: int, info: _libbpf.BpfProgInfo) -> tuple[int, ...]:
    ids = (ctypes.c_uint32 * info.nr_map_ids)()
    query = _libbpf.BpfProgInfo(nr_map_ids=len(ids), map_ids=ctypes.addressof(ids))
    _libbpf.obj_info(fd, query, f"program {info.id}")
    return tuple(ids[: query.nr_map_ids])


def _program(fd: int, cache: _Cache, attached: dict[int, list[str]], held: dict[tuple[str, int], tuple[Holder, ...]],
             boot: float, counted: bool) -> ProgramInfo:
    info = _libbpf.obj_info(fd, _libbpf.BpfProgInfo(), "program")
    counted = counted or bool(info.run_cnt or info.run_time_ns)
    return ProgramInfo(
        id=info.id, type=_type_name("prog", info.type), name=cache.program_name(fd, info), tag=bytes(info.tag).hex(),
        loaded_at=int(boot + info.load_time / 1e9), uid=info.created_by_uid, bytes_xlated=info.xlated_prog_len,
        bytes_jited=info.jited_prog_len, memlock=_memlock(fd), verified_insns=info.verified_insns or None,
        map_ids=_map_ids(fd, info) if info.nr_map_ids else (), btf_id=info.btf_id,
        run_cnt=info.run_cnt if counted else None, run_time_ns=info.run_time_ns if counted else None,
        attached=tuple(attached.get(info.id, ())), pids=held.get(("prog", info.id), ()),
    )


def programs(ids: Optional[Sequence[int]] = None) -> list[ProgramInfo]:
    """Every loaded program (or those with `ids`): where it is attached (its links, and the XDP and
    cls_bpf attachments in this namespace that no link holds), what it costs, who holds it."""
    cache = _Cache()
    held = _holders()
    link_list = _links(None, held)
    attached: dict[int, list[str]] = defaultdict(list)
    for link in link_list:
        attached[link.prog_id].append(link.target)
    for net in _net(None, cache, link_list):
        if net.link_id is None:
            attached[net.prog_id].append(f"{net.hook} on {net.ifname}" + (f" ({net.mode})" if net.mode else ""))
    boot = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)  # load_time counts from boot
    counted = _stats_enabled()
    return [_program(fd, cache, attached, held, boot, counted) for fd in _each("prog", ids)]


# --- maps ---


@dataclass(frozen=True)
class MapInfo:
    """One map, as `bpftool map show` has it, with its key and value types in C from its BTF and, for
    hash maps small enough to read in a few milliseconds, how many entries it holds (else None)."""

    id: int
    type: str
    name: str
    flags: int
    key_size: int
    value_size: int
    key_type: Optional[str]
    value_type: Optional[str]
    max_entries: int
    entries: Optional[int]
    memlock: Optional[int]
    frozen: bool
    btf_id: int
    pids: tuple[Holder, ...]


def _count_entries(fd: int, info: _libbpf.BpfMapInfo) -> Optional[int]:
    """Entries of a hash map, counted by reading it in batches when that is cheap (see _COUNT_BUDGET);
    None for other map types and for maps too big to read for a listing."""
    if info.type not in _HASH_TYPES:
        return None
    value_bytes = info.value_size
    if info.type in _PER_CPU_HASH_TYPES:
        value_bytes = ((info.value_size + 7) & ~7) * possible_cpus()  # a slot of 8-byte multiples per CPU
    if info.max_entries * (info.key_size + value_bytes) > _COUNT_BUDGET:
        return None
    chunk = min(info.max_entries, DEFAULT_CHUNK)

    def alloc(n: int) -> tuple[bytearray, bytearray]:
        return bytearray(n * info.key_size), bytearray(n * value_bytes)

    try:
        return sum(n for _, _, n in lookup_batches(fd, info.key_size, alloc, chunk, f"map {info.id}"))
    except NoBatchLookup:
        return None


def _btf_type_name(btf: Optional[Btf], type_id: int) -> Optional[str]:
    return btf.type_name(type_id) if btf is not None and type_id else None


def _map(fd: int, cache: _Cache, held: dict[tuple[str, int], tuple[Holder, ...]]) -> MapInfo:
    info = _libbpf.obj_info(fd, _libbpf.BpfMapInfo(), "map")
    btf = cache.btf(info.btf_id) if info.btf_id else None
    frozen = _fdinfo(f"/proc/self/fdinfo/{fd}").get("frozen", "0") == "1"
    return MapInfo(
        id=info.id, type=_type_name("map", info.type), name=info.name.decode(), flags=info.map_flags,
        key_size=info.key_size, value_size=info.value_size, key_type=_btf_type_name(btf, info.btf_key_type_id),
        value_type=_btf_type_name(btf, info.btf_value_type_id), max_entries=info.max_entries,
        entries=_count_entries(fd, info), memlock=_memlock(fd), frozen=frozen, btf_id=info.btf_id,
        pids=held.get(("map", info.id), ()),
    )


def maps(ids: Optional[Sequence[int]] = None) -> list[MapInfo]:
    """Every map (or those with `ids`), typed from its BTF, with who holds it."""
    cache = _Cache()
    held = _holders()
    return [_map(fd, cache, held) for fd in _each("map", ids)]


# --- one map's entries ---


def open_map(ref: str) -> Map:
    """A map by id ("123") or by the path it is pinned at, typed by the BTF the kernel keeps for it.
    The Map owns its fd: close it (or use `with`)."""
    if ref.isdigit():
        fd = _fd_by_id("map", int(ref)) if int(ref) < 1 << 32 else None  # ids are u32: ctypes would wrap a larger one
        if fd is None:
            raise BpfscopeError(errno.ENOENT, f"no map with id {ref}")
    else:
        if not os.path.exists(ref):
            raise BpfscopeError(errno.ENOENT, f"no pin at {ref}")
        fd = _libbpf.check(_libbpf.bpf_obj_get(ref.encode()), f"open pin {ref}", "CAP_SYS_ADMIN")
    try:
        kind = _fd_kind(fd)
        if kind != "map":
            raise BpfscopeError(errno.EINVAL, f"{ref} is {f'a {_NOUNS[kind]}' if kind else 'no BPF object'}, not a map")
    except BaseException:
        os.close(fd)
        raise
    return Map.from_fd(fd, f"map {ref}")


def _plain_converter(btf: Btf, type_id: int) -> Callable[[Any], Any]:
    """Turns a numpy value of the type into JSON-ready data, as bpftool's "formatted" dump spells it:
    structs as objects, enums by name, char arrays as text, other arrays as lists. Straight from the
    batch's arrays: a dataclass per entry first (TypeCodec.to_python) would double the cost of a dump."""
    t = btf.resolve(type_id)
    if t.kind in (Kind.STRUCT, Kind.UNION, Kind.DATASEC):
        if t.kind == Kind.DATASEC:  # .data, .bss, .rodata: one field per variable
            members = [(m.name, m.type_id) for m in t.members]
        else:
            members = list(btf.codec(t.id).fields().items())  # as the dtype has them: anonymous members flattened
        fields = [(name, _plain_converter(btf, member)) for name, member in members]
        return lambda raw: {name: convert(raw[name]) for name, convert in fields}
    if t.kind == Kind.ARRAY:
        element = btf.resolve(t.ref)
        if element.kind == Kind.INT and element.size == 1 and element.is_char:
            return lambda raw: bytes(raw).split(b"\0", 1)[0].decode(errors="backslashreplace")
        convert = _plain_converter(btf, t.ref)
        return lambda raw: [convert(item) for item in raw]
    if t.kind in (Kind.ENUM, Kind.ENUM64):
        names = {value: name for name, value in reversed(t.enumerators)}  # the first name of a value wins
        return lambda raw: names.get(int(raw), int(raw))
    if t.kind == Kind.FLOAT:
        return float
    if t.kind == Kind.INT and t.is_bool:
        return bool
    return _plain_scalar


def _plain_scalar(raw: Any) -> Any:
    """An integer; raw bytes (an integer wider than 8 bytes, or a key or value without BTF) in hex."""
    return "0x" + raw.tobytes().hex() if isinstance(raw, np.void) else int(raw)


def _converter(codec: Any) -> Callable[[Any], Any]:
    return _plain_converter(codec.btf, codec.type_id) if isinstance(codec, TypeCodec) else _plain_scalar


def map_entries(m: Map, *, limit: Optional[int] = None, chunk: int = DEFAULT_CHUNK) -> Iterator[dict[str, Any]]:
    """The map's entries as JSON-ready dicts, {"key", "value"} (per-CPU maps: {"key", "values": [{"cpu",
    "value"}]}) as bpftool's "formatted" dump has them, read `chunk` at a time with bpf_map_lookup_batch
    and no more than `limit`. Map types without batch lookup (LPM tries) are read key by key."""
    plain_key, plain_value = _converter(m.key), _converter(m.value)

    def entry(key: Any, value: Any) -> dict[str, Any]:
        if m.per_cpu:
            return {"key": plain_key(key),
                    "values": [{"cpu": cpu, "value": plain_value(v)} for cpu, v in enumerate(value)]}
        return {"key": plain_key(key), "value": plain_value(value)}

    if limit == 0:
        return
    emitted = 0
    for keys, values in m.batches(chunk):
        for i in range(len(keys)):
            yield entry(keys[i], values[i])
            emitted += 1
            if emitted == limit:
                return


# --- pins ---


@dataclass(frozen=True)
class Pin:
    """A file on bpffs and the object it keeps alive. For a link, `name` is its program's name and
    `target` where it attaches. `error` says why a pin could not be opened (Linux's own maps.debug and
    progs.debug fail with ENOENT once the iterators they show are gone)."""

    path: str
    kind: str  # "prog", "map" or "link"; "" when it could not be opened
    id: int
    type: str
    name: str
    target: Optional[str] = None
    error: Optional[str] = None


def _pin(path: str, cache: _Cache) -> Pin:
    fd = _libbpf.bpf_obj_get(path.encode())
    if fd < 0 and -fd not in (errno.EPERM, errno.EACCES):
        return Pin(path, "", 0, "", "", error=os.strerror(-fd))
    _libbpf.check(fd, f"open pin {path}", "CAP_SYS_ADMIN")
    try:
        kind = _fd_kind(fd)
        if kind == "map":
            m = _libbpf.obj_info(fd, _libbpf.BpfMapInfo(), path)
            return Pin(path, kind, m.id, _type_name("map", m.type), m.name.decode())
        if kind == "prog":
            p = _libbpf.obj_info(fd, _libbpf.BpfProgInfo(), path)
            return Pin(path, kind, p.id, _type_name("prog", p.type), cache.program_name(fd, p))
        if kind == "link":
            link = _link(fd, {})
            return Pin(path, kind, link.id, link.type, cache.program_name_by_id(link.prog_id), link.target)
        return Pin(path, "", 0, "", "", error=f"not a BPF program, map or link ({os.readlink(f'/proc/self/fd/{fd}')})")
    finally:
        os.close(fd)


def _on_bpffs(path: str) -> bool:
    real = os.path.realpath(path)
    below = [m for m in mounts() if real == m.target or real.startswith(m.target.rstrip("/") + "/")]
    return bool(below) and max(below, key=lambda m: len(m.target)).fstype == _BPF_FS


def pins(root: str = BPFFS) -> list[Pin]:
    """Every pin under `root` (a bpffs directory), depth first in name order. Symbolic links (iproute2
    makes /sys/fs/bpf/ip point at tc) are not followed, so nothing is listed twice."""
    if not _on_bpffs(root):
        raise BpfscopeError(errno.ENOENT, f"{root} is not on a bpffs, so nothing is pinned there "
                                          f"(mount one: mount -t bpf bpf {BPFFS})")
    cache = _Cache()
    found = []

    def unreadable(exc: OSError) -> None:
        raise _libbpf.error(exc.errno or errno.EACCES, f"list {exc.filename}", "CAP_DAC_READ_SEARCH")

    for directory, subdirs, files in os.walk(root, onerror=unreadable):
        subdirs.sort()
        for name in sorted(files):
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                found.append(_pin(path, cache))
    return found


# --- the verifier's verdict ---


@dataclass(frozen=True)
class VerifiedProgram:
    """A program the verifier accepted; `log` is its verifier log when one was asked for."""

    name: str
    section: str
    type: str
    verified_insns: Optional[int]  # None: a kernel before 5.16 does not count them
    bytes_xlated: int
    bytes_jited: int
    log: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """What loading an object said: every program accepted (`programs`), or `rejection`."""

    path: str
    accepted: bool
    programs: tuple[VerifiedProgram, ...] = ()
    maps: int = 0
    rejection: Optional[VerifierError] = None


_MIN_LOG = 1 << 20
_MAX_LOG = 1 << 28  # the kernel refuses a log buffer of 1 GiB or more


def _accepted_logs(path: str) -> dict[str, list[str]]:
    """Each program's verifier log, from a second load: libbpf keeps the log of a program it loaded only
    in a buffer the caller gave. Level 2 (BPF_LOG_LEVEL2), every instruction and the state it reached: the
    verifier drops a level 1 log once the program passes. A log that does not fit makes the load fail
    with ENOSPC (Linux 6.4+), so the buffers grow until it fits."""
    size = _MIN_LOG
    while True:
        spec = ObjectSpec.open(path)
        buffers = {}
        for name, program in spec.programs.items():
            if program.autoload:
                buffers[name] = ctypes.create_string_buffer(size)
                _libbpf.check(_libbpf.bpf_program__set_log_buf(program._ptr, buffers[name], size), "set log buffer")
                _libbpf.check(_libbpf.bpf_program__set_log_level(program._ptr, BPF_LOG_LEVEL2), "set log level")
        try:
            spec.load().close()
        except SyscallError as exc:
            if exc.errno != errno.ENOSPC or size >= _MAX_LOG:
                raise
            size *= 4
            continue
        return {name: buffer.value.decode(errors="replace").splitlines() for name, buffer in buffers.items()}


def verify(path: str, *, log: bool = False) -> Verdict:
    """Loads the object at `path` into this kernel, attaching nothing, and unloads it: the verifier's
    verdict on each program. `log` also keeps the verifier's log of each accepted program. Errors that
    are not the verifier's (no such file, no privileges) are raised."""
    try:
        obj = ObjectSpec.open(path).load()
    except VerifierError as exc:
        return Verdict(path, False, rejection=exc)
    with obj:
        found = []
        for program in obj.programs.values():
            info = _libbpf.obj_info(program.fd, _libbpf.BpfProgInfo(), f"program {program.name!r}")
            found.append(VerifiedProgram(program.name, program.section, _type_name("prog", info.type),
                                         info.verified_insns or None, info.xlated_prog_len, info.jited_prog_len))
        map_count = len(obj.maps)
    if log:
        logs = _accepted_logs(path)
        found = [replace(p, log=tuple(logs.get(p.name, ()))) for p in found]
    return Verdict(path, True, tuple(found), map_count)
