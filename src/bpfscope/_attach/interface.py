"""Hooks on a network interface: XDP (a link, in the driver or on the generic path) and tc (a tcx link
from Linux 6.6, clsact + cls_bpf before)."""

from __future__ import annotations

import ctypes
import errno
from typing import TYPE_CHECKING, Union

from .. import _libbpf, netdev
from .._uapi import BPF_TC_EGRESS, BPF_TC_INGRESS, AttachType, XdpFlags
from ..errors import BpfscopeError, SyscallError
from ..link import TcDirection, TcFilterLink, TcMode, TcxLink, XdpLink, XdpMode, remove_stale_tc_filters

if TYPE_CHECKING:
    from ..program import Program

__all__ = ["tc", "xdp"]

_XDP_FLAGS = {XdpMode.NATIVE: XdpFlags.DRV_MODE, XdpMode.GENERIC: XdpFlags.SKB_MODE}
_TCX_ATTACH = {TcDirection.INGRESS: AttachType.TCX_INGRESS, TcDirection.EGRESS: AttachType.TCX_EGRESS}
_TC_ATTACH_POINT = {TcDirection.INGRESS: BPF_TC_INGRESS, TcDirection.EGRESS: BPF_TC_EGRESS}


def xdp(program: Program, iface: Union[str, int], *, mode: XdpMode) -> XdpLink:
    index = iface if isinstance(iface, int) else netdev.ifindex(iface)
    name = netdev.ifname(index)
    modes = [XdpMode.NATIVE, XdpMode.GENERIC] if mode is XdpMode.AUTO else [mode]
    for candidate in modes:
        opts = _libbpf.BpfLinkCreateOpts(sz=ctypes.sizeof(_libbpf.BpfLinkCreateOpts))
        opts.flags = _XDP_FLAGS[candidate]
        fd = _libbpf.bpf_link_create(program.fd, index, AttachType.XDP, opts)
        if fd >= 0:
            return XdpLink(fd, f"xdp {program.name} on {name} ({candidate.value})", mode=candidate)
        err = -fd
        if err in (errno.EOPNOTSUPP, errno.EINVAL) and candidate is XdpMode.NATIVE and mode is XdpMode.AUTO:
            continue  # the driver has no native XDP: fall back to generic
        if err == errno.EBUSY:
            raise SyscallError(err, f"attach xdp {program.name} to {name}",
                               "another XDP program is attached there; detach it first")
        if err in (errno.EOPNOTSUPP, errno.EINVAL) and candidate is XdpMode.NATIVE:
            raise BpfscopeError(err, f"{name} has no native XDP (its driver lacks it); attach with "
                                     "XdpMode.GENERIC, or XdpMode.AUTO to fall back to it")
        _libbpf.check(fd, f"attach xdp {program.name} to {name}", "CAP_NET_ADMIN")
    raise AssertionError("unreachable")


def tc(program: Program, iface: Union[str, int], *, direction: TcDirection,
       mode: TcMode) -> Union[TcxLink, TcFilterLink]:
    index = iface if isinstance(iface, int) else netdev.ifindex(iface)
    name = netdev.ifname(index)
    what = f"tc {direction.value} {program.name} on {name}"
    if mode in (TcMode.AUTO, TcMode.TCX):
        opts = _libbpf.BpfLinkCreateOpts(sz=ctypes.sizeof(_libbpf.BpfLinkCreateOpts))
        fd = _libbpf.bpf_link_create(program.fd, index, _TCX_ATTACH[direction], opts)
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
    tc_opts = _libbpf.BpfTcOpts(sz=ctypes.sizeof(_libbpf.BpfTcOpts), prog_fd=program.fd)
    _libbpf.check(_libbpf.bpf_tc_attach(hook, tc_opts), f"attach {what} (clsact)", "CAP_NET_ADMIN")
    return TcFilterLink(hook, tc_opts, f"{what} (clsact)")
