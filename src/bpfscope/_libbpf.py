"""The only ctypes module: libbpf's functions, their signatures, and the one conversion of a failed
call into an exception. libbpf >= 1.0 returns -errno (or NULL and sets errno); `check` and
`check_ptr` turn both into SyscallError so errno is always set."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import threading
from contextlib import contextmanager
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    Union,
    c_bool,
    c_char,
    c_char_p,
    c_int,
    c_int32,
    c_long,
    c_size_t,
    c_uint,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
)
from typing import Any, Callable, Iterator, TypeVar

from . import _privileges
from ._arch import machine
from ._uapi import ENOTSUPP, NR_BPF, AttachType, ProgramType
from .errors import KernelRefusedError, NotSupportedError, PermissionDeniedError, SyscallError

MIN_VERSION = (1, 0)


def _load_library() -> ctypes.CDLL:
    for name in ("libbpf.so.1", ctypes.util.find_library("bpf")):
        if not name:
            continue
        try:
            return ctypes.CDLL(name, use_errno=True)
        except OSError:
            continue
    raise NotSupportedError("libbpf", "libbpf.so.1 not found; install it (Debian: apt-get install libbpf1)")


lib = _load_library()
libc = ctypes.CDLL(None, use_errno=True)


def _fn(name: str, restype: Any, *argtypes: Any) -> Callable[..., Any]:
    func = getattr(lib, name)
    func.restype = restype
    func.argtypes = argtypes
    return func  # type: ignore[no-any-return]


# --- option structs (layout of libbpf 1.1's headers; `sz` lets newer libbpf accept them) ---


class BpfObjectOpenOpts(Structure):
    _fields_ = [
        ("sz", c_size_t),
        ("object_name", c_char_p),
        ("relaxed_maps", c_bool),
        ("pin_root_path", c_char_p),
        ("_attach_prog_fd", c_uint32),
        ("kconfig", c_char_p),
        ("btf_custom_path", c_char_p),
        ("kernel_log_buf", c_char_p),
        ("kernel_log_size", c_size_t),
        ("kernel_log_level", c_uint32),
    ]


class _KprobeMultiCreate(Structure):
    _fields_ = [("flags", c_uint32), ("cnt", c_uint32), ("syms", c_void_p), ("addrs", c_void_p), ("cookies", c_void_p)]


class _LinkCreateUnion(Union):
    _fields_ = [("bpf_cookie", c_uint64), ("kprobe_multi", _KprobeMultiCreate)]


class BpfLinkCreateOpts(Structure):
    _fields_ = [
        ("sz", c_size_t),
        ("flags", c_uint32),
        ("iter_info", c_void_p),
        ("iter_info_len", c_uint32),
        ("target_btf_id", c_uint32),
        ("u", _LinkCreateUnion),
    ]


class BpfUprobeOpts(Structure):
    _fields_ = [
        ("sz", c_size_t),
        ("ref_ctr_offset", c_size_t),
        ("bpf_cookie", c_uint64),
        ("retprobe", c_bool),
        ("func_name", c_char_p),
    ]


class BpfKprobeOpts(Structure):
    _fields_ = [("sz", c_size_t), ("bpf_cookie", c_uint64), ("offset", c_size_t), ("retprobe", c_bool)]


class BpfKprobeMultiOpts(Structure):
    _fields_ = [
        ("sz", c_size_t),
        ("syms", POINTER(c_char_p)),
        ("addrs", POINTER(ctypes.c_ulong)),
        ("cookies", POINTER(c_uint64)),
        ("cnt", c_size_t),
        ("retprobe", c_bool),
    ]


class BpfTraceOpts(Structure):
    """bpf_trace_opts; bpf_perf_event_opts and bpf_usdt_opts have the same layout (a cookie)."""

    _fields_ = [("sz", c_size_t), ("cookie", c_uint64)]


class _IterMap(Structure):
    _fields_ = [("map_fd", c_uint32)]


class _IterCgroup(Structure):
    _fields_ = [("order", c_uint32), ("cgroup_fd", c_uint32), ("cgroup_id", c_uint64)]


class _IterTask(Structure):
    _fields_ = [("tid", c_uint32), ("pid", c_uint32), ("pid_fd", c_uint32)]


class BpfIterLinkInfo(Union):
    """union bpf_iter_link_info: what an iterator walks (one map, a cgroup's tree, one task)."""

    _fields_ = [("map", _IterMap), ("cgroup", _IterCgroup), ("task", _IterTask)]


class BpfIterAttachOpts(Structure):
    _fields_ = [("sz", c_size_t), ("link_info", POINTER(BpfIterLinkInfo)), ("link_info_len", c_uint32)]


class _NetfilterLinkCreate(Structure):
    _fields_ = [("pf", c_uint32), ("hooknum", c_uint32), ("priority", c_int32), ("flags", c_uint32)]


class _UprobeMultiLinkCreate(Structure):
    _fields_ = [
        ("path", c_uint64),
        ("offsets", c_uint64),
        ("ref_ctr_offsets", c_uint64),
        ("cookies", c_uint64),
        ("cnt", c_uint32),
        ("flags", c_uint32),
        ("pid", c_uint32),
    ]


class _LinkCreateOptions(Union):
    _fields_ = [("netfilter", _NetfilterLinkCreate), ("uprobe_multi", _UprobeMultiLinkCreate)]


class LinkCreateAttr(Structure):
    """union bpf_attr for BPF_LINK_CREATE (Linux 6.6's layout), for the attach types whose options
    libbpf 1.1's bpf_link_create does not know: netfilter and uprobe_multi."""

    _fields_ = [
        ("prog_fd", c_uint32),
        ("target_fd", c_uint32),
        ("attach_type", c_uint32),
        ("flags", c_uint32),
        ("u", _LinkCreateOptions),
    ]


class BpfTestRunOpts(Structure):
    _fields_ = [
        ("sz", c_size_t),
        ("data_in", c_void_p),
        ("data_out", c_void_p),
        ("data_size_in", c_uint32),
        ("data_size_out", c_uint32),
        ("ctx_in", c_void_p),
        ("ctx_out", c_void_p),
        ("ctx_size_in", c_uint32),
        ("ctx_size_out", c_uint32),
        ("retval", c_uint32),
        ("repeat", c_int),
        ("duration", c_uint32),
        ("flags", c_uint32),
        ("cpu", c_uint32),
        ("batch_size", c_uint32),
    ]


class BpfMapBatchOpts(Structure):
    _fields_ = [("sz", c_size_t), ("elem_flags", c_uint64), ("flags", c_uint64)]


class BpfMapCreateOpts(Structure):
    _fields_ = [
        ("sz", c_size_t),
        ("btf_fd", c_uint32),
        ("btf_key_type_id", c_uint32),
        ("btf_value_type_id", c_uint32),
        ("btf_vmlinux_value_type_id", c_uint32),
        ("inner_map_fd", c_uint32),
        ("map_flags", c_uint32),
        ("map_extra", c_uint64),
        ("numa_node", c_uint32),
        ("map_ifindex", c_uint32),
    ]


class BpfTcHook(Structure):
    _fields_ = [("sz", c_size_t), ("ifindex", c_int), ("attach_point", c_int), ("parent", c_uint32)]


class BpfTcOpts(Structure):
    _fields_ = [
        ("sz", c_size_t),
        ("prog_fd", c_int),
        ("flags", c_uint32),
        ("prog_id", c_uint32),
        ("handle", c_uint32),
        ("priority", c_uint32),
    ]


class BpfProgLoadOpts(Structure):
    _fields_ = [
        ("sz", c_size_t),
        ("attempts", c_int),
        ("expected_attach_type", c_int),
        ("prog_btf_fd", c_uint32),
        ("prog_flags", c_uint32),
        ("prog_ifindex", c_uint32),
        ("kern_version", c_uint32),
        ("attach_btf_id", c_uint32),
        ("attach_prog_fd", c_uint32),
        ("attach_btf_obj_fd", c_uint32),
        ("fd_array", c_void_p),
        ("func_info", c_void_p),
        ("func_info_cnt", c_uint32),
        ("func_info_rec_size", c_uint32),
        ("line_info", c_void_p),
        ("line_info_cnt", c_uint32),
        ("line_info_rec_size", c_uint32),
        ("log_level", c_uint32),
        ("log_size", c_uint32),
        ("log_buf", c_char_p),
    ]


class BpfMapInfo(Structure):
    """struct bpf_map_info from linux/bpf.h, as far as bpfscope reads it."""

    _fields_ = [
        ("type", c_uint32),
        ("id", c_uint32),
        ("key_size", c_uint32),
        ("value_size", c_uint32),
        ("max_entries", c_uint32),
        ("map_flags", c_uint32),
        ("name", c_char * 16),
        ("ifindex", c_uint32),
        ("btf_vmlinux_value_type_id", c_uint32),
        ("netns_dev", c_uint64),
        ("netns_ino", c_uint64),
        ("btf_id", c_uint32),
        ("btf_key_type_id", c_uint32),
        ("btf_value_type_id", c_uint32),
        ("_pad", c_uint32),
        ("map_extra", c_uint64),
        ("_spare", c_uint64 * 8),  # room for fields newer kernels add
    ]


class BpfProgInfo(Structure):
    """struct bpf_prog_info from linux/bpf.h (all of it, as of Linux 6.18); pointer fields are
    addresses of caller buffers the kernel fills when their counts are set."""

    _fields_ = [
        ("type", c_uint32),
        ("id", c_uint32),
        ("tag", c_uint8 * 8),
        ("jited_prog_len", c_uint32),
        ("xlated_prog_len", c_uint32),
        ("jited_prog_insns", c_uint64),
        ("xlated_prog_insns", c_uint64),
        ("load_time", c_uint64),  # ns since boot
        ("created_by_uid", c_uint32),
        ("nr_map_ids", c_uint32),
        ("map_ids", c_uint64),
        ("name", c_char * 16),
        ("ifindex", c_uint32),
        ("gpl_compatible", c_uint32),
        ("netns_dev", c_uint64),
        ("netns_ino", c_uint64),
        ("nr_jited_ksyms", c_uint32),
        ("nr_jited_func_lens", c_uint32),
        ("jited_ksyms", c_uint64),
        ("jited_func_lens", c_uint64),
        ("btf_id", c_uint32),
        ("func_info_rec_size", c_uint32),
        ("func_info", c_uint64),
        ("nr_func_info", c_uint32),
        ("nr_line_info", c_uint32),
        ("line_info", c_uint64),
        ("jited_line_info", c_uint64),
        ("nr_jited_line_info", c_uint32),
        ("line_info_rec_size", c_uint32),
        ("jited_line_info_rec_size", c_uint32),
        ("nr_prog_tags", c_uint32),
        ("prog_tags", c_uint64),
        ("run_time_ns", c_uint64),  # counted only while BPF stats are enabled
        ("run_cnt", c_uint64),
        ("recursion_misses", c_uint64),
        ("verified_insns", c_uint32),
        ("attach_btf_obj_id", c_uint32),
        ("attach_btf_id", c_uint32),
        ("_spare", c_uint32 * 9),  # room for fields newer kernels add
    ]


class BpfBtfInfo(Structure):
    """struct bpf_btf_info from linux/bpf.h."""

    _fields_ = [("btf", c_uint64), ("btf_size", c_uint32), ("id", c_uint32), ("name", c_uint64),
                ("name_len", c_uint32), ("kernel_btf", c_uint32)]


class _LinkTarget(Structure):
    """The members of bpf_link_info's union that hold an (ifindex or id, attach_type) pair: xdp, tcx,
    netkit, netns, sockmap, struct_ops."""

    _fields_ = [("ifindex", c_uint32), ("attach_type", c_uint32)]


class _LinkName(Structure):
    """raw_tracepoint and iter: a name the kernel copies into a caller buffer."""

    _fields_ = [("name", c_uint64), ("name_len", c_uint32)]


class _LinkTracing(Structure):
    _fields_ = [("attach_type", c_uint32), ("target_obj_id", c_uint32), ("target_btf_id", c_uint32)]


class _LinkCgroup(Structure):
    _fields_ = [("cgroup_id", c_uint64), ("attach_type", c_uint32)]


class _LinkNetfilter(Structure):
    _fields_ = [("pf", c_uint32), ("hooknum", c_uint32), ("priority", c_int32), ("flags", c_uint32)]


class _LinkKprobeMulti(Structure):
    _fields_ = [("addrs", c_uint64), ("count", c_uint32), ("flags", c_uint32)]


class _LinkUprobeMulti(Structure):
    _fields_ = [
        ("path", c_uint64),
        ("offsets", c_uint64),
        ("ref_ctr_offsets", c_uint64),
        ("cookies", c_uint64),
        ("path_size", c_uint32),
        ("count", c_uint32),
        ("flags", c_uint32),
        ("pid", c_uint32),
    ]


class _PerfEventProbe(Structure):
    """uprobe, kprobe and tracepoint of a perf_event link share this head: a name buffer, its size,
    the probe's offset, then an address (kprobe) or cookie."""

    _fields_ = [("name", c_uint64), ("name_len", c_uint32), ("offset", c_uint32), ("addr", c_uint64)]


class _PerfEventCounter(Structure):
    _fields_ = [("config", c_uint64), ("type", c_uint32)]


class _PerfEventUnion(Union):
    _fields_ = [("probe", _PerfEventProbe), ("event", _PerfEventCounter)]


class _LinkPerfEvent(Structure):
    _fields_ = [("type", c_uint32), ("_pad", c_uint32), ("u", _PerfEventUnion)]


class _LinkInfoUnion(Union):
    _fields_ = [
        ("target", _LinkTarget),
        ("named", _LinkName),
        ("tracing", _LinkTracing),
        ("cgroup", _LinkCgroup),
        ("netfilter", _LinkNetfilter),
        ("kprobe_multi", _LinkKprobeMulti),
        ("uprobe_multi", _LinkUprobeMulti),
        ("perf_event", _LinkPerfEvent),
        ("_spare", c_uint64 * 10),
    ]


class BpfLinkInfo(Structure):
    """struct bpf_link_info from linux/bpf.h; `u` is the union, read by `type` (enum bpf_link_type)."""

    _fields_ = [("type", c_uint32), ("id", c_uint32), ("prog_id", c_uint32), ("_pad", c_uint32),
                ("u", _LinkInfoUnion)]


class BpfXdpQueryOpts(Structure):
    _fields_ = [
        ("sz", c_size_t),
        ("prog_id", c_uint32),
        ("drv_prog_id", c_uint32),
        ("hw_prog_id", c_uint32),
        ("skb_prog_id", c_uint32),
        ("attach_mode", c_uint8),  # XDP_ATTACHED_*
    ]


class BpfProgQueryAttr(Structure):
    """union bpf_attr for BPF_PROG_QUERY as Linux 6.6 has it: libbpf 1.1's bpf_prog_query_opts
    predates `link_ids`, which tells the tcx links on an interface apart."""

    _fields_ = [
        ("target", c_uint32),  # an fd, or the ifindex for tcx
        ("attach_type", c_uint32),
        ("query_flags", c_uint32),
        ("attach_flags", c_uint32),
        ("prog_ids", c_uint64),
        ("count", c_uint32),
        ("_pad", c_uint32),
        ("prog_attach_flags", c_uint64),
        ("link_ids", c_uint64),
        ("link_attach_flags", c_uint64),
        ("revision", c_uint64),
    ]


# --- functions ---

PRINT_FN = CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)
libbpf_set_print = _fn("libbpf_set_print", c_void_p, PRINT_FN)
libbpf_strerror = _fn("libbpf_strerror", c_int, c_int, c_char_p, c_size_t)
libbpf_major_version = _fn("libbpf_major_version", c_uint)
libbpf_minor_version = _fn("libbpf_minor_version", c_uint)
libbpf_num_possible_cpus = _fn("libbpf_num_possible_cpus", c_int)
libbpf_probe_bpf_prog_type = _fn("libbpf_probe_bpf_prog_type", c_int, c_int, c_void_p)
libbpf_probe_bpf_map_type = _fn("libbpf_probe_bpf_map_type", c_int, c_int, c_void_p)

bpf_object__open_file = _fn("bpf_object__open_file", c_void_p, c_char_p, POINTER(BpfObjectOpenOpts))
bpf_object__load = _fn("bpf_object__load", c_int, c_void_p)
bpf_object__close = _fn("bpf_object__close", None, c_void_p)
bpf_object__name = _fn("bpf_object__name", c_char_p, c_void_p)
bpf_object__btf = _fn("bpf_object__btf", c_void_p, c_void_p)
bpf_object__btf_fd = _fn("bpf_object__btf_fd", c_int, c_void_p)
bpf_object__next_program = _fn("bpf_object__next_program", c_void_p, c_void_p, c_void_p)
bpf_object__next_map = _fn("bpf_object__next_map", c_void_p, c_void_p, c_void_p)

bpf_program__name = _fn("bpf_program__name", c_char_p, c_void_p)
bpf_program__section_name = _fn("bpf_program__section_name", c_char_p, c_void_p)
bpf_program__fd = _fn("bpf_program__fd", c_int, c_void_p)
bpf_program__type = _fn("bpf_program__type", c_int, c_void_p)
bpf_program__set_autoload = _fn("bpf_program__set_autoload", c_int, c_void_p, c_bool)
bpf_program__autoload = _fn("bpf_program__autoload", c_bool, c_void_p)
bpf_program__attach_tracepoint = _fn(
    "bpf_program__attach_tracepoint", c_void_p, c_void_p, c_char_p, c_char_p
)
bpf_program__attach_uprobe_opts = _fn(
    "bpf_program__attach_uprobe_opts", c_void_p, c_void_p, c_int, c_char_p, c_size_t, POINTER(BpfUprobeOpts)
)
bpf_program__attach_perf_event = _fn("bpf_program__attach_perf_event", c_void_p, c_void_p, c_int)
bpf_program__attach_perf_event_opts = _fn(
    "bpf_program__attach_perf_event_opts", c_void_p, c_void_p, c_int, POINTER(BpfTraceOpts)
)
bpf_program__attach = _fn("bpf_program__attach", c_void_p, c_void_p)
bpf_program__autoattach = _fn("bpf_program__autoattach", c_bool, c_void_p)
bpf_program__expected_attach_type = _fn("bpf_program__expected_attach_type", c_int, c_void_p)
bpf_program__set_attach_target = _fn("bpf_program__set_attach_target", c_int, c_void_p, c_int, c_char_p)
bpf_program__attach_kprobe_opts = _fn(
    "bpf_program__attach_kprobe_opts", c_void_p, c_void_p, c_char_p, POINTER(BpfKprobeOpts)
)
bpf_program__attach_kprobe_multi_opts = _fn(
    "bpf_program__attach_kprobe_multi_opts", c_void_p, c_void_p, c_char_p, POINTER(BpfKprobeMultiOpts)
)
bpf_program__attach_trace_opts = _fn("bpf_program__attach_trace_opts", c_void_p, c_void_p, POINTER(BpfTraceOpts))
bpf_program__attach_lsm = _fn("bpf_program__attach_lsm", c_void_p, c_void_p)
bpf_program__attach_raw_tracepoint = _fn("bpf_program__attach_raw_tracepoint", c_void_p, c_void_p, c_char_p)
bpf_program__attach_freplace = _fn("bpf_program__attach_freplace", c_void_p, c_void_p, c_int, c_char_p)
bpf_program__attach_iter = _fn("bpf_program__attach_iter", c_void_p, c_void_p, POINTER(BpfIterAttachOpts))
bpf_program__attach_usdt = _fn(
    "bpf_program__attach_usdt", c_void_p, c_void_p, c_int, c_char_p, c_char_p, c_char_p, POINTER(BpfTraceOpts)
)
bpf_program__attach_netns = _fn("bpf_program__attach_netns", c_void_p, c_void_p, c_int)
bpf_map__attach_struct_ops = _fn("bpf_map__attach_struct_ops", c_void_p, c_void_p)
bpf_map__set_map_flags = _fn("bpf_map__set_map_flags", c_int, c_void_p, c_uint32)
bpf_object__find_map_by_name = _fn("bpf_object__find_map_by_name", c_void_p, c_void_p, c_char_p)
bpf_iter_create = _fn("bpf_iter_create", c_int, c_int)
bpf_prog_attach = _fn("bpf_prog_attach", c_int, c_int, c_int, c_int, c_uint)
bpf_prog_detach2 = _fn("bpf_prog_detach2", c_int, c_int, c_int, c_int)
libbpf_register_prog_handler = _fn("libbpf_register_prog_handler", c_int, c_char_p, c_int, c_int, c_void_p)

bpf_link__fd = _fn("bpf_link__fd", c_int, c_void_p)
bpf_link__destroy = _fn("bpf_link__destroy", c_int, c_void_p)
bpf_link__disconnect = _fn("bpf_link__disconnect", None, c_void_p)
bpf_link_create = _fn("bpf_link_create", c_int, c_int, c_int, c_int, POINTER(BpfLinkCreateOpts))

bpf_map__name = _fn("bpf_map__name", c_char_p, c_void_p)
bpf_map__fd = _fn("bpf_map__fd", c_int, c_void_p)
bpf_map__type = _fn("bpf_map__type", c_int, c_void_p)
bpf_map__key_size = _fn("bpf_map__key_size", c_uint32, c_void_p)
bpf_map__value_size = _fn("bpf_map__value_size", c_uint32, c_void_p)
bpf_map__max_entries = _fn("bpf_map__max_entries", c_uint32, c_void_p)
bpf_map__set_max_entries = _fn("bpf_map__set_max_entries", c_int, c_void_p, c_uint32)
bpf_map__map_flags = _fn("bpf_map__map_flags", c_uint32, c_void_p)
bpf_map__set_pin_path = _fn("bpf_map__set_pin_path", c_int, c_void_p, c_char_p)
bpf_map__btf_key_type_id = _fn("bpf_map__btf_key_type_id", c_uint32, c_void_p)
bpf_map__btf_value_type_id = _fn("bpf_map__btf_value_type_id", c_uint32, c_void_p)
bpf_map__initial_value = _fn("bpf_map__initial_value", c_void_p, c_void_p, POINTER(c_size_t))

bpf_map_lookup_elem = _fn("bpf_map_lookup_elem", c_int, c_int, c_void_p, c_void_p)
bpf_map_update_elem = _fn("bpf_map_update_elem", c_int, c_int, c_void_p, c_void_p, c_uint64)
bpf_map_delete_elem = _fn("bpf_map_delete_elem", c_int, c_int, c_void_p)
bpf_map_get_next_key = _fn("bpf_map_get_next_key", c_int, c_int, c_void_p, c_void_p)
bpf_map_lookup_batch = _fn(
    "bpf_map_lookup_batch",
    c_int,
    c_int,
    c_void_p,
    c_void_p,
    c_void_p,
    c_void_p,
    POINTER(c_uint32),
    POINTER(BpfMapBatchOpts),
)
bpf_map_update_batch = _fn(
    "bpf_map_update_batch", c_int, c_int, c_void_p, c_void_p, POINTER(c_uint32), POINTER(BpfMapBatchOpts)
)
bpf_map_delete_batch = _fn(
    "bpf_map_delete_batch", c_int, c_int, c_void_p, POINTER(c_uint32), POINTER(BpfMapBatchOpts)
)
bpf_map_create = _fn("bpf_map_create", c_int, c_int, c_char_p, c_uint32, c_uint32, c_uint32, c_void_p)
bpf_prog_load = _fn(
    "bpf_prog_load", c_int, c_int, c_char_p, c_char_p, c_void_p, c_size_t, POINTER(BpfProgLoadOpts)
)
bpf_btf_load = _fn("bpf_btf_load", c_int, c_void_p, c_size_t, c_void_p)
libbpf_find_vmlinux_btf_id = _fn("libbpf_find_vmlinux_btf_id", c_int, c_char_p, c_int)
bpf_obj_pin = _fn("bpf_obj_pin", c_int, c_int, c_char_p)
bpf_obj_get = _fn("bpf_obj_get", c_int, c_char_p)
bpf_obj_get_info_by_fd = _fn("bpf_obj_get_info_by_fd", c_int, c_int, c_void_p, POINTER(c_uint32))

_Info = TypeVar("_Info", bound=Structure)


def obj_info(fd: int, info: _Info, what: str) -> _Info:
    """`info` (BpfProgInfo, BpfMapInfo, BpfLinkInfo...) filled in by the kernel for the object behind `fd`."""
    size = c_uint32(ctypes.sizeof(info))
    check(bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), f"read info of {what}")
    return info
bpf_prog_test_run_opts = _fn("bpf_prog_test_run_opts", c_int, c_int, POINTER(BpfTestRunOpts))

bpf_prog_get_next_id = _fn("bpf_prog_get_next_id", c_int, c_uint32, POINTER(c_uint32))
bpf_map_get_next_id = _fn("bpf_map_get_next_id", c_int, c_uint32, POINTER(c_uint32))
bpf_link_get_next_id = _fn("bpf_link_get_next_id", c_int, c_uint32, POINTER(c_uint32))
bpf_prog_get_fd_by_id = _fn("bpf_prog_get_fd_by_id", c_int, c_uint32)
bpf_map_get_fd_by_id = _fn("bpf_map_get_fd_by_id", c_int, c_uint32)
bpf_link_get_fd_by_id = _fn("bpf_link_get_fd_by_id", c_int, c_uint32)
bpf_btf_get_fd_by_id = _fn("bpf_btf_get_fd_by_id", c_int, c_uint32)
bpf_enable_stats = _fn("bpf_enable_stats", c_int, c_int)
bpf_xdp_query = _fn("bpf_xdp_query", c_int, c_int, c_int, POINTER(BpfXdpQueryOpts))
bpf_program__set_log_level = _fn("bpf_program__set_log_level", c_int, c_void_p, c_uint32)
bpf_program__set_log_buf = _fn("bpf_program__set_log_buf", c_int, c_void_p, c_void_p, c_size_t)
libbpf_bpf_prog_type_str = _fn("libbpf_bpf_prog_type_str", c_char_p, c_int)
libbpf_bpf_map_type_str = _fn("libbpf_bpf_map_type_str", c_char_p, c_int)
libbpf_bpf_link_type_str = _fn("libbpf_bpf_link_type_str", c_char_p, c_int)
libbpf_bpf_attach_type_str = _fn("libbpf_bpf_attach_type_str", c_char_p, c_int)

bpf_tc_hook_create = _fn("bpf_tc_hook_create", c_int, POINTER(BpfTcHook))
bpf_tc_hook_destroy = _fn("bpf_tc_hook_destroy", c_int, POINTER(BpfTcHook))
bpf_tc_attach = _fn("bpf_tc_attach", c_int, POINTER(BpfTcHook), POINTER(BpfTcOpts))
bpf_tc_query = _fn("bpf_tc_query", c_int, POINTER(BpfTcHook), POINTER(BpfTcOpts))
bpf_tc_detach = _fn("bpf_tc_detach", c_int, POINTER(BpfTcHook), POINTER(BpfTcOpts))

btf__parse = _fn("btf__parse", c_void_p, c_char_p, c_void_p)
btf__load_from_kernel_by_id = _fn("btf__load_from_kernel_by_id", c_void_p, c_uint32)
btf__free = _fn("btf__free", None, c_void_p)
btf__load_vmlinux_btf = _fn("btf__load_vmlinux_btf", c_void_p)
btf__find_by_name_kind = _fn("btf__find_by_name_kind", c_int, c_void_p, c_char_p, c_uint32)
btf__type_by_id = _fn("btf__type_by_id", c_void_p, c_void_p, c_uint32)
btf__raw_data = _fn("btf__raw_data", c_void_p, c_void_p, POINTER(c_uint32))

_syscall = libc.syscall
_syscall.restype = c_long
_vsnprintf = libc.vsnprintf
_vsnprintf.restype = c_int
_vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]


def version() -> tuple[int, int]:
    return (libbpf_major_version(), libbpf_minor_version())


def path() -> str:
    """The file the dynamic loader mapped as libbpf: the library every call here goes to."""
    with open("/proc/self/maps", encoding="utf-8") as maps:
        for line in maps:
            mapped = line.split(maxsplit=5)[-1].strip()
            if "/libbpf.so" in mapped:
                return mapped
    return str(lib._name)


if version() < MIN_VERSION:
    raise NotSupportedError("libbpf", f"libbpf {version()} is older than {MIN_VERSION}")

# Sections a newer libbpf knows and an older one would open without a program type: registered here,
# before any object is opened, so their programs load with the types the kernel wants (their attach
# methods use bpf() directly). (libbpf version that knows them, section, program type, attach type)
_NEWER_SECTIONS = (
    ((1, 2), "netfilter", ProgramType.NETFILTER, AttachType.NETFILTER),
    ((1, 3), "uprobe.multi+", ProgramType.KPROBE, AttachType.TRACE_UPROBE_MULTI),
    ((1, 3), "uretprobe.multi+", ProgramType.KPROBE, AttachType.TRACE_UPROBE_MULTI),
)
for _since, _section, _prog_type, _attach_type in _NEWER_SECTIONS:
    if version() < _since and libbpf_register_prog_handler(_section.encode(), _prog_type, _attach_type, None) < 0:
        raise SyscallError(ctypes.get_errno() or errno.EINVAL, f"register SEC(\"{_section}\") with libbpf")


# --- errors ---

_PERMISSION_ERRNOS = (errno.EPERM, errno.EACCES)


_LIBBPF_ERRNO_BASE = 4000  # libbpf's own codes (LIBBPF_ERRNO__FORMAT, ...) follow this


def error(err: int, op: str, capability: str = "CAP_BPF") -> SyscallError:
    """The one conversion of an errno into an exception. `capability` is what `op` needs ("CAP_BPF",
    "CAP_BPF+CAP_PERFMON"): EPERM/EACCES is PermissionDeniedError naming what the process lacks of it, or
    KernelRefusedError when it holds all of it, so no message blames a privilege the process has."""
    if err in _PERMISSION_ERRNOS:
        return _denied(err, op, capability)
    if err >= _LIBBPF_ERRNO_BASE:
        text = ctypes.create_string_buffer(256)
        libbpf_strerror(err, text, len(text))
        return SyscallError(errno.EINVAL, op, text.value.decode())
    if err == ENOTSUPP:  # the kernel's own "not supported", which strerror does not know
        return SyscallError(errno.EOPNOTSUPP, op, "the kernel does not do this for this kind of object")
    return SyscallError(err, op)


def _denied(err: int, op: str, capability: str) -> SyscallError:
    needed = _privileges.parse_labels(capability)
    if needed is None:  # a name this module cannot look up: say what is needed
        return PermissionDeniedError(err, op, capability)
    labels = " and ".join(cap.label for cap in needed)
    if not _privileges.in_initial_user_namespace():
        return PermissionDeniedError(err, op, labels, user_namespace=True)
    have = _privileges.effective_capabilities()
    missing = _privileges.missing_capabilities(needed, have)
    if missing:
        return PermissionDeniedError(err, op, " and ".join(cap.label for cap in missing))
    suspects = _privileges.kernel_restrictions().suspects()  # read only: an error path mounts nothing
    return KernelRefusedError(err, op, _privileges.holders(needed, have), suspects)


def check(ret: int, op: str, capability: str = "CAP_BPF") -> int:
    """Raises for a negative libbpf return (-errno, errno also set); returns `ret` otherwise."""
    if ret < 0:
        raise error(-ret if ret != -1 else (ctypes.get_errno() or errno.EINVAL), op, capability)
    return ret


def check_ptr(ptr: int | None, op: str, capability: str = "CAP_BPF") -> int:
    """Raises for a NULL pointer from libbpf (errno says why); returns the pointer otherwise."""
    if not ptr:
        raise error(ctypes.get_errno() or errno.EINVAL, op, capability)
    return ptr


def bpf(cmd: int, attr: Structure) -> int:
    """The bpf() syscall itself, for commands libbpf 1.1 has no wrapper for; -errno on failure, as
    libbpf returns, so `check` applies."""
    ret = int(_syscall(NR_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr)))
    return -(ctypes.get_errno() or errno.EINVAL) if ret < 0 else ret


def setns(fd: int, nstype: int, what: str) -> None:
    """Moves the calling thread into the namespace behind `fd` (setns(2); CLONE_NEWNET: a network one)."""
    if libc.setns(fd, nstype) != 0:
        raise error(ctypes.get_errno() or errno.EINVAL, f"enter {what}", "CAP_SYS_ADMIN")


def syscall(number: int, *args: Any) -> int:
    ret = _syscall(number, *args)
    if ret < 0:
        raise OSError(ctypes.get_errno(), "syscall failed")
    return int(ret)


# --- libbpf's log: captured, never printed behind the caller's back ---

_log_lock = threading.Lock()
_log_sink: list[str] | None = None


# vsnprintf consumes its va_list; a copy of the va_list's bytes is va_copy by hand, so a message
# longer than the first buffer (the verifier's log) can be formatted again into one that fits.
_VA_LIST_SIZE = {"x86_64": 24, "aarch64": 32}[machine()]


def _print(level: int, fmt: bytes, args: int) -> int:
    sink = _log_sink
    if sink is None:
        return 0
    saved = ctypes.string_at(args, _VA_LIST_SIZE)
    buf = ctypes.create_string_buffer(1 << 16)
    n = _vsnprintf(buf, len(buf), fmt, args)
    if n >= len(buf):
        ctypes.memmove(args, saved, _VA_LIST_SIZE)
        buf = ctypes.create_string_buffer(n + 1)
        _vsnprintf(buf, len(buf), fmt, args)
    sink.append(buf.value.decode(errors="replace"))
    return 0


_print_callback = PRINT_FN(_print)  # module global: libbpf keeps the pointer
libbpf_set_print(_print_callback)


@contextmanager
def captured_log() -> Iterator[list[str]]:
    """Collects what libbpf says during the block (warnings, the verifier's log on failure)."""
    global _log_sink
    with _log_lock:
        sink: list[str] = []
        _log_sink = sink
        try:
            yield sink
        finally:
            _log_sink = None


def cstr(value: str | bytes | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return value.encode()


def buffer_address(buf: Any) -> int:
    """Address of a writable buffer (numpy array, bytearray or ctypes object)."""
    if hasattr(buf, "ctypes"):
        return int(buf.ctypes.data)
    return ctypes.addressof((c_char * len(buf)).from_buffer(buf))


def raw_btf(btf_ptr: int) -> bytes:
    """The raw BTF blob behind a libbpf `struct btf *`, for bpfscope.btf to decode."""
    size = c_uint32()
    data = check_ptr(btf__raw_data(btf_ptr, ctypes.byref(size)), "read BTF")
    return ctypes.string_at(data, size.value)


def kernel_btf(btf_id: int) -> bytes:
    """The raw BTF the kernel holds under `btf_id` (a map's or program's types)."""
    ptr = check_ptr(btf__load_from_kernel_by_id(btf_id), f"load BTF id {btf_id}")
    try:
        return raw_btf(ptr)
    finally:
        btf__free(ptr)
