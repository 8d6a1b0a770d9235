"""The rtnetlink client: attributes read from hand-made bytes, and requests to this namespace's lo, which
any user may ask about (the cls_bpf dump is tested through `inspect net` in tests/kernel)."""

from __future__ import annotations

import errno
import socket
import struct

import pytest

from bpfscope._netlink import IFINFOMSG, RouteSocket, attributes
from bpfscope._uapi import RTM_GETLINK
from bpfscope.errors import SyscallError

_IFLA_IFNAME = 3  # if_link.h; only this test asks for it
_RTM_NEWLINK = 16


def attribute(kind: int, value: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(value), kind) + value + b"\0" * (-len(value) % 4)


def test_attributes_are_padded_to_four_bytes_and_typed_without_flags() -> None:
    nested = attribute(11, struct.pack("=I", 42))
    data = b"head" + attribute(1, b"bpf\0") + attribute(2 | 0x8000, nested) + attribute(5, b"abcde")
    found = attributes(data, 4)
    assert found == {1: b"bpf\0", 2: nested, 5: b"abcde"}
    assert attributes(found[2]) == {11: struct.pack("=I", 42)}


def test_a_truncated_attribute_ends_the_list() -> None:
    assert attributes(attribute(1, b"ok") + struct.pack("=HH", 2, 7)) == {1: b"ok"}


def test_a_plain_request_returns_its_one_reply() -> None:
    with RouteSocket() as sock:
        for _ in range(2):  # one socket, one request after another
            (reply,) = sock.request(RTM_GETLINK, IFINFOMSG.pack(socket.AF_UNSPEC, 0, 1, 0, 0), what="get lo")
            assert reply.type == _RTM_NEWLINK
            assert attributes(reply.body, IFINFOMSG.size)[_IFLA_IFNAME] == b"lo\0"


def test_an_error_reply_raises_naming_what_failed() -> None:
    with RouteSocket() as sock, pytest.raises(SyscallError, match="get interface 2147483647") as raised:
        sock.request(RTM_GETLINK, IFINFOMSG.pack(socket.AF_UNSPEC, 0, 2**31 - 1, 0, 0),
                     what="get interface 2147483647")
    assert raised.value.errno == errno.ENODEV
