"""Socket and network-namespace hooks: a socket filter on one socket, sk_lookup and the flow dissector on a
network namespace, sk_msg and sk_skb on a sockmap or sockhash, and netfilter hooks (Linux 6.4+)."""

from __future__ import annotations

import errno
import os
import socket
import threading
from typing import TYPE_CHECKING, Callable, Optional, TypeVar, Union

from .. import _libbpf
from .._uapi import (
    BPF_F_NETFILTER_IP_DEFRAG,
    BPF_LINK_CREATE,
    SO_ATTACH_BPF,
    AttachType,
    MapType,
    NetfilterFamily,
    NetfilterHook,
    ProgramType,
)
from ..errors import BpfscopeError
from ..link import FdLink, LibbpfLink, Link, ProgAttachLink, SocketFilterLink
from . import NET, attached, describe, expect_type, probes

if TYPE_CHECKING:
    from ..maps import Map
    from ..program import Program

__all__ = ["Netns", "in_netns", "netfilter", "netns", "socket_filter", "sockmap"]

# A network namespace: a name `ip netns` made, a path (/proc/<pid>/ns/net), an open fd, or None for this
# process's own.
Netns = Union[str, int, None]
_NETNS_RUN_DIR = "/var/run/netns"
_CLONE_NEWNET = 0x40000000
_SOCKMAP_HOOKS = (AttachType.SK_MSG_VERDICT, AttachType.SK_SKB_STREAM_PARSER, AttachType.SK_SKB_STREAM_VERDICT,
                  AttachType.SK_SKB_VERDICT)
_T = TypeVar("_T")


def socket_filter(program: Program, sock: Union[socket.socket, int]) -> SocketFilterLink:
    expect_type(program, "attach_socket", ProgramType.SOCKET_FILTER)
    fd = sock if isinstance(sock, int) else sock.fileno()
    try:
        held = socket.socket(fileno=os.dup(fd))
    except OSError as exc:
        raise BpfscopeError(exc.errno or errno.EBADF, f"fd {fd} is not a socket") from None
    try:
        held.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, program.fd)
    except OSError as exc:
        held.close()
        raise _libbpf.error(exc.errno or errno.EINVAL, f"attach {program.name} to socket fd {fd}", NET) from None
    return SocketFilterLink(held, f"socket filter {program.name} on fd {fd}")


def _netns_path(ns: Netns) -> str:
    if ns is None:
        return "/proc/self/ns/net"
    assert isinstance(ns, str)
    return ns if os.sep in ns else os.path.join(_NETNS_RUN_DIR, ns)


def _open_netns(ns: Netns) -> tuple[int, str]:
    """An fd of the namespace (the caller closes it unless it passed an fd) and how messages name it."""
    if isinstance(ns, int):
        return ns, f"netns fd {ns}"
    path = _netns_path(ns)
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC), f"netns {ns or 'of this process'}"
    except FileNotFoundError:
        raise BpfscopeError(errno.ENOENT, f"no network namespace {ns!r} (no {path})") from None


def netns(program: Program, ns: Netns) -> LibbpfLink:
    expect_type(program, "attach_netns", ProgramType.SK_LOOKUP, ProgramType.FLOW_DISSECTOR)
    fd, name = _open_netns(ns)
    what = f"{program.section} in {name}"
    try:
        with _libbpf.captured_log():
            ptr = _libbpf.bpf_program__attach_netns(program._ptr, fd)
    finally:
        if not isinstance(ns, int):
            os.close(fd)
    # One flow dissector per namespace; sk_lookup programs run in a chain of up to 64.
    full = f"{name} has its flow dissector already" if program.type is ProgramType.FLOW_DISSECTOR else \
        f"{name} has as many sk_lookup programs as it runs"
    return LibbpfLink(attached(ptr, f"attach {program.name} to {what}", NET, {errno.E2BIG: full, errno.EEXIST: full}),
                      what)


def in_netns(ns: Netns, work: Callable[[], _T]) -> _T:
    """`work()` run in network namespace `ns`, on a thread of its own that enters it (setns): sockets and
    netfilter hooks made there belong to that namespace; this thread's namespace never changes."""
    if ns is None:
        return work()
    fd, name = _open_netns(ns)
    result: list[_T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            _libbpf.setns(fd, _CLONE_NEWNET, name)
            result.append(work())
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    try:
        thread = threading.Thread(target=run, name=f"bpfscope-{name}")
        thread.start()
        thread.join()
    finally:
        if not isinstance(ns, int):
            os.close(fd)
    if failure:
        raise failure[0]
    return result[0]


def sockmap(program: Program, sock_map: Map, *, attach_type: Optional[AttachType]) -> Link:
    expect_type(program, "attach_sockmap", ProgramType.SK_MSG, ProgramType.SK_SKB)
    if sock_map.type not in (MapType.SOCKMAP, MapType.SOCKHASH):
        raise BpfscopeError(errno.EINVAL, f"map {sock_map.name!r} is not a sockmap or sockhash")
    hook = attach_type if attach_type is not None else int(_libbpf.bpf_program__expected_attach_type(program._ptr))
    if hook not in _SOCKMAP_HOOKS:
        raise BpfscopeError(errno.EINVAL, f"{describe(program)} needs attach_type= (one of "
                                          f"{', '.join(f'AttachType.{h.name}' for h in _SOCKMAP_HOOKS)})")
    hook = AttachType(hook)
    what = f"{hook.name.lower()} of map {sock_map.name!r}"
    link = _libbpf.bpf_link_create(program.fd, sock_map.fd, hook, None)
    if link >= 0:
        return FdLink(link, f"{program.name} as {what}")
    if -link not in (errno.EINVAL, errno.EOPNOTSUPP):
        _libbpf.check(link, f"attach {program.name} as {what}", NET)
    # Sockmap links came in Linux 6.10: before, the map holds the program (and frees it with itself).
    _libbpf.check(_libbpf.bpf_prog_attach(program.fd, sock_map.fd, hook, 0), f"attach {program.name} as {what}", NET)
    return ProgAttachLink(program.fd, sock_map.fd, hook, f"{program.name} as {what} (BPF_PROG_ATTACH)")


def netfilter(program: Program, *, family: NetfilterFamily, hook: NetfilterHook, priority: int, defrag: bool,
              ns: Netns) -> FdLink:
    expect_type(program, "attach_netfilter", ProgramType.NETFILTER)
    missing = probes.netfilter_link()
    if missing is not None:
        raise missing
    what = f"netfilter {family.name.lower()} {hook.name.lower()} priority {priority}"
    attr = _libbpf.LinkCreateAttr(prog_fd=program.fd, attach_type=AttachType.NETFILTER)
    attr.u.netfilter.pf, attr.u.netfilter.hooknum, attr.u.netfilter.priority = family, hook, priority
    attr.u.netfilter.flags = BPF_F_NETFILTER_IP_DEFRAG if defrag else 0
    link = in_netns(ns, lambda: _libbpf.bpf(BPF_LINK_CREATE, attr))
    if link == -errno.ERANGE:
        raise BpfscopeError(errno.ERANGE, f"priority {priority} is not allowed for {what} (the first and last "
                                          "priorities are netfilter's own; with defrag it must come after defrag)")
    return FdLink(_libbpf.check(link, f"attach {program.name} to {what}", NET), f"{program.name} on {what}")
