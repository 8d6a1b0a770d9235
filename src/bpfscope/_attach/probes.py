"""Probes for hooks that features.Feature does not cover: multi-kprobe and multi-uprobe links, the BPF
LSM, netfilter links. Each answers None, or a NotSupportedError whose one line names what is missing;
answers are cached, and a probe that cannot decide for lack of privileges raises (not cached), as
features.probe does. Each tries the real thing and closes what it made: nothing stays loaded or attached."""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import struct
from typing import Callable, Optional

from .. import _libbpf, mounts
from .._privileges import kernel_restrictions
from .._uapi import BPF_LINK_CREATE, ENOTSUPP, AttachType, ProgramType
from ..errors import KernelRefusedError, NotSupportedError
from ..features import kernel_config
from . import NET, TRACE

__all__ = ["bpf_lsm", "kprobe_multi", "netfilter_link", "struct_ops_link", "uprobe_multi"]

# The one kernel function that exists to be traced by tests (net/bpf/test_run.c).
_TRACED_BY_TESTS = "bpf_fentry_test1"


def _returning(r0: int) -> bytes:
    """r0 = `r0`; exit."""
    return struct.pack("<BBhi", 0xB7, 0, 0, r0) + struct.pack("<BBhi", 0x95, 0, 0, 0)


def _cached(probe: Callable[[], None]) -> Callable[[], Optional[NotSupportedError]]:
    """Turns a probe that raises NotSupportedError into a cached answer: None, or that error."""

    @functools.cache
    @functools.wraps(probe)
    def answer() -> Optional[NotSupportedError]:
        try:
            probe()
        except NotSupportedError as exc:
            return exc.with_traceback(None)  # cached: keep no frames alive
        return None

    return answer


def _refusal(feature: str, err: int, op: str, capability: str) -> Exception:
    """A failed step's answer: the kernel's no (refused to a process holding `capability`, or unknown to it),
    or the caller's missing privileges (raised, so the probe is not cached)."""
    if err in (errno.EPERM, errno.EACCES):
        denied = _libbpf.error(err, op, capability)
        if not isinstance(denied, KernelRefusedError):
            return denied
        return NotSupportedError(feature, str(denied))
    if err in (errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP, errno.E2BIG):
        return NotSupportedError(feature, f"{op}: {os.strerror(err)}")
    return _libbpf.error(err, op, capability)


def _load(feature: str, prog_type: int, attach_type: int, r0: int, capability: str, btf_id: int = 0) -> int:
    insns = _returning(r0)
    opts = _libbpf.BpfProgLoadOpts(sz=ctypes.sizeof(_libbpf.BpfProgLoadOpts), expected_attach_type=attach_type,
                                   attach_btf_id=btf_id)
    fd = _libbpf.bpf_prog_load(prog_type, b"bpfscope_probe", b"GPL", insns, len(insns) // 8, opts)
    if fd < 0:
        raise _refusal(feature, -fd, f"loading a {ProgramType(prog_type).name.lower()} program for {feature}",
                       capability)
    return int(fd)


def _config_unset(option: str) -> bool:
    config = kernel_config()
    return config is not None and config.get(option, "n") == "n"


@_cached
def kprobe_multi() -> None:
    """Links a kprobe.multi program to bpf_fentry_test1 (only test_run calls it) for a moment."""
    feature = "multi-kprobe links"
    if _config_unset("CONFIG_FPROBE"):
        raise NotSupportedError(feature, "CONFIG_FPROBE is not set")
    fd = _load(feature, ProgramType.KPROBE, AttachType.TRACE_KPROBE_MULTI, 0, TRACE)
    try:
        symbols = (ctypes.c_char_p * 1)(_TRACED_BY_TESTS.encode())
        opts = _libbpf.BpfLinkCreateOpts(sz=ctypes.sizeof(_libbpf.BpfLinkCreateOpts))
        opts.u.kprobe_multi.cnt = 1
        opts.u.kprobe_multi.syms = ctypes.cast(symbols, ctypes.c_void_p)
        link = _libbpf.bpf_link_create(fd, 0, AttachType.TRACE_KPROBE_MULTI, opts)
        if link < 0:
            raise _refusal(feature, -link, f"BPF_LINK_CREATE kprobe_multi on {_TRACED_BY_TESTS}", TRACE)
        os.close(link)
    finally:
        os.close(fd)


@_cached
def uprobe_multi() -> None:
    """Asks for a multi-uprobe link on a path that does not exist: a kernel that has them says ENOENT
    (it looked the path up), one that does not says EINVAL. Nothing is attached either way."""
    feature = "multi-uprobe links"
    fd = _load(feature, ProgramType.KPROBE, AttachType.TRACE_UPROBE_MULTI, 0, TRACE)
    try:
        path = ctypes.create_string_buffer(b"/nonexistent/bpfscope-probe")
        offsets = (ctypes.c_uint64 * 1)(0)
        attr = _libbpf.LinkCreateAttr(prog_fd=fd, attach_type=AttachType.TRACE_UPROBE_MULTI)
        attr.u.uprobe_multi.path = ctypes.addressof(path)
        attr.u.uprobe_multi.offsets = ctypes.addressof(offsets)
        attr.u.uprobe_multi.cnt = 1
        link = _libbpf.bpf(BPF_LINK_CREATE, attr)
        if link >= 0:
            os.close(link)
        elif -link != errno.ENOENT:
            raise _refusal(feature, -link, "BPF_LINK_CREATE uprobe_multi", TRACE)
    finally:
        os.close(fd)


@_cached
def bpf_lsm() -> None:
    """The BPF LSM must be among the active LSMs (an lsm/ program attached to an inactive one never runs),
    and the kernel must load and attach one: an lsm/file_open program that allows everything, for a moment."""
    feature = "the BPF LSM"
    if _config_unset("CONFIG_BPF_LSM"):
        raise NotSupportedError(feature, "CONFIG_BPF_LSM is not set")
    lsms = kernel_restrictions(mounts.ensure_securityfs()).lsms
    if lsms is not None and "bpf" not in lsms:
        raise NotSupportedError(feature, f"bpf is not among the active LSMs ({','.join(lsms)}); boot with "
                                         f"lsm={','.join(lsms)},bpf")
    btf_id = _libbpf.libbpf_find_vmlinux_btf_id(b"file_open", AttachType.LSM_MAC)
    if btf_id < 0:
        raise NotSupportedError(feature, "no bpf_lsm_file_open in the kernel's BTF")
    fd = _load(feature, ProgramType.LSM, AttachType.LSM_MAC, 0, TRACE, btf_id)
    try:
        link = _libbpf.bpf_link_create(fd, 0, AttachType.LSM_MAC, None)
        if link < 0:
            raise _refusal(feature, -link, "attaching lsm/file_open", TRACE)
        os.close(link)
    finally:
        os.close(fd)


@_cached
def netfilter_link() -> None:
    """Loads a netfilter program (Linux 6.4+, CONFIG_NETFILTER_BPF_LINK); attaching it would touch this
    namespace's traffic, and the program type and the link come together."""
    feature = "netfilter links"
    if _config_unset("CONFIG_NETFILTER_BPF_LINK"):
        raise NotSupportedError(feature, "CONFIG_NETFILTER_BPF_LINK is not set")
    os.close(_load(feature, ProgramType.NETFILTER, AttachType.NETFILTER, 1, NET))


_BTF_KIND_STRUCT = 4


@_cached
def struct_ops_link() -> None:
    """Struct_ops maps registered through a link came with Linux 6.4, and with them the kernel type that
    holds one: looked up in the kernel's BTF (creating a struct_ops map needs a kernel type to fill)."""
    feature = "struct_ops links"
    btf = _libbpf.btf__load_vmlinux_btf()
    if not btf:
        raise NotSupportedError(feature, "the kernel has no BTF (/sys/kernel/btf/vmlinux)")
    try:
        if _libbpf.btf__find_by_name_kind(btf, b"bpf_struct_ops_link", _BTF_KIND_STRUCT) < 0:
            raise NotSupportedError(feature, "the kernel's BTF has no struct bpf_struct_ops_link (Linux 6.4+)")
    finally:
        _libbpf.btf__free(btf)
