"""rtnetlink over a plain socket, for what no bpf() command answers: the cls_bpf filters under a clsact
qdisc, which XDP program an interface runs. Requests go one at a time; a reply is a list of messages,
their attributes read by `attributes`."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from types import TracebackType
from typing import Optional

from . import _libbpf
from ._uapi import NLA_TYPE_MASK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR

__all__ = ["IFINFOMSG", "TCMSG", "Message", "RouteSocket", "attributes"]

_NLMSGHDR = struct.Struct("=IHHII")  # struct nlmsghdr: len, type, flags, seq, pid
_ERROR = struct.Struct("=i")  # struct nlmsgerr starts with the negative errno (0: an acknowledgement)
IFINFOMSG = struct.Struct("=BxHiII")  # struct ifinfomsg: family, type, index, flags, change
TCMSG = struct.Struct("=BxxxiIII")  # struct tcmsg: family, ifindex, handle, parent, info (priority << 16 | protocol)
_RECEIVE = 1 << 16  # more than the kernel puts in one datagram of a dump


@dataclass(frozen=True)
class Message:
    """One reply: its type (RTM_NEW*) and what follows its header (the family's struct, then attributes)."""

    type: int
    body: bytes


class RouteSocket:
    """A NETLINK_ROUTE socket of this process's network namespace; close it, or use `with`."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        self._sock.bind((0, 0))
        self._seq = 0

    def request(self, msg_type: int, payload: bytes, *, what: str, dump: bool = False,
                capability: str = "CAP_NET_ADMIN") -> list[Message]:
        """Sends a `msg_type` request and returns its replies: each message of a dump, up to NLMSG_DONE, or
        the one reply to a plain request. An error reply raises, saying it could not `what`."""
        self._seq += 1
        flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else 0)
        self._sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(payload), msg_type, flags, self._seq, 0) + payload)
        found: list[Message] = []
        while True:
            data = self._sock.recv(_RECEIVE)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, kind, _flags, seq, _pid = _NLMSGHDR.unpack_from(data, offset)
                if length < _NLMSGHDR.size:
                    break
                body = data[offset + _NLMSGHDR.size : offset + length]
                offset += (length + 3) & ~3
                if seq != self._seq:
                    continue  # the rest of an earlier request that was given up
                if kind == NLMSG_DONE:
                    return found
                if kind == NLMSG_ERROR:
                    (err,) = _ERROR.unpack_from(body)
                    if err:
                        raise _libbpf.error(-err, what, capability)
                    return found
                found.append(Message(kind, body))
            if found and not dump:
                return found

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> RouteSocket:
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()


def attributes(data: bytes, start: int = 0) -> dict[int, bytes]:
    """The netlink attributes in data[start:], by type (nested ones are read again from their value)."""
    found: dict[int, bytes] = {}
    while start + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, start)
        if length < 4:
            break
        found[kind & NLA_TYPE_MASK] = data[start + 4 : start + length]
        start += (length + 3) & ~3
    return found
