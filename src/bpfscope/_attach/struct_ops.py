"""struct_ops maps (a TCP congestion control, a scheduler written in BPF), registered with the kernel
through a link (Linux 6.4+), so the registration goes with the link's last fd. Without a link the kernel
keeps a registration until someone removes it, and a killed process would leave it behind: bpfscope
has the maps made for a link (BPF_F_LINK, which SEC(".struct_ops.link") asks for from libbpf 1.2) and
refuses the rest."""

from __future__ import annotations

import errno
from typing import Union

from .. import _libbpf
from .._uapi import BPF_F_LINK, AttachType, MapType
from ..errors import BpfscopeError, NotSupportedError
from ..link import FdLink, LibbpfLink
from . import TRACE, attached, probes

__all__ = ["attach", "map_names", "prepare"]


def _struct_ops_maps(object_ptr: int) -> list[int]:
    found, ptr = [], _libbpf.bpf_object__next_map(object_ptr, None)
    while ptr:
        if _libbpf.bpf_map__type(ptr) == MapType.STRUCT_OPS:
            found.append(ptr)
        ptr = _libbpf.bpf_object__next_map(object_ptr, ptr)
    return found


def map_names(object_ptr: int) -> list[str]:
    return [_libbpf.bpf_map__name(ptr).decode() for ptr in _struct_ops_maps(object_ptr)]


def prepare(object_ptr: int) -> None:
    """Before load: every struct_ops map is made for a link where the kernel has struct_ops links."""
    maps = _struct_ops_maps(object_ptr)
    if maps and probes.struct_ops_link() is None:
        for ptr in maps:
            flags = _libbpf.bpf_map__map_flags(ptr)
            _libbpf.check(_libbpf.bpf_map__set_map_flags(ptr, flags | BPF_F_LINK), "make a struct_ops map for a link")


def attach(object_ptr: int, name: str) -> Union[FdLink, LibbpfLink]:
    ptr = _libbpf.bpf_object__find_map_by_name(object_ptr, name.encode())
    if not ptr or _libbpf.bpf_map__type(ptr) != MapType.STRUCT_OPS:
        raise BpfscopeError(errno.ENOENT, f"the object has no struct_ops map {name!r}")
    if not _libbpf.bpf_map__map_flags(ptr) & BPF_F_LINK:
        missing = probes.struct_ops_link()
        reason = str(missing) if missing else "it was made without BPF_F_LINK"
        raise NotSupportedError("struct_ops links", f"{reason}: registered without a link, struct_ops {name!r} "
                                                    "would outlive a killed process")
    what = f"struct_ops {name}"
    busy = {errno.EEXIST: f"a struct_ops named as {name!r} is registered already"}
    with _libbpf.captured_log():
        stand_in = _libbpf.bpf_map__attach_struct_ops(ptr)
    stand_in = attached(stand_in, f"register {what}", TRACE, busy)
    if _libbpf.version() >= (1, 2):
        return LibbpfLink(stand_in, what)  # libbpf made the link itself
    # libbpf 1.1 only wrote the map's value (its programs' fds): the link is made here, and libbpf's
    # stand-in is dropped without its detach, which would delete that value.
    _libbpf.bpf_link__disconnect(stand_in)
    _libbpf.bpf_link__destroy(stand_in)
    fd = _libbpf.bpf_link_create(_libbpf.bpf_map__fd(ptr), 0, AttachType.STRUCT_OPS, None)
    if fd == -errno.EEXIST:
        raise BpfscopeError(errno.EEXIST, busy[errno.EEXIST])
    return FdLink(_libbpf.check(fd, f"register {what}", TRACE), what)
