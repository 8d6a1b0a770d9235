"""struct_ops maps (Object.attach_struct_ops, and Object.attach_all): a TCP congestion control written in
BPF is registered through a link while the link is open, runs for the connections that pick it, and is
gone with the link, or with its killed process."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from bpfscope._attach import probes
from bpfscope.errors import BpfscopeError, NotSupportedError
from bpfscope.object import Object, load
from tests.kernel.attach_support import kill_9_leaves_nothing, one_line

COUNT = 10
NAME = "bpfscope_cc"


@pytest.fixture
def obj(test_object) -> Iterator[Object]:
    with load(test_object("attach_struct_ops")) as loaded:
        yield loaded


def registered() -> list[str]:
    with open("/proc/sys/net/ipv4/tcp_available_congestion_control") as f:
        return f.read().split()


def connect_with(congestion_control: str, count: int = COUNT) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        for _ in range(count):
            with socket.socket() as client:
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, congestion_control.encode())
                client.connect(server.getsockname())
                server.accept()[0].close()


def skip_without_struct_ops_links() -> None:
    missing = probes.struct_ops_link()
    if missing is not None:
        pytest.skip(str(missing))


def test_a_congestion_control_registered_while_its_link_is_open(obj):
    skip_without_struct_ops_links()
    with obj.attach_struct_ops(NAME) as link:
        assert link.description == f"struct_ops {NAME}"
        assert NAME in registered()
        connect_with(NAME)
    assert NAME not in registered()
    assert obj.maps["connections"][0] == COUNT


def test_attach_all_registers_struct_ops_maps(obj):
    skip_without_struct_ops_links()
    with obj.attach_all() as group:
        assert [link.description for link in group.links] == [f"struct_ops {NAME}"]
        assert NAME in registered()
    assert NAME not in registered()


def test_bad_input_is_one_line(obj):
    with pytest.raises(BpfscopeError, match="the object has no struct_ops map 'connections'") as not_struct_ops:
        obj.attach_struct_ops("connections")
    with pytest.raises(BpfscopeError, match=r"attach it with Object.attach_struct_ops\(map name\)") as auto:
        obj.programs["bpfscope_init"].attach()
    for exc in (not_struct_ops.value, auto.value):
        one_line(exc)


def test_a_kernel_without_struct_ops_links_says_so(obj):
    if probes.struct_ops_link() is None:
        pytest.skip("this kernel has struct_ops links")
    with pytest.raises(NotSupportedError, match="struct_ops links") as exc:
        obj.attach_struct_ops(NAME)
    one_line(exc.value)
    assert NAME not in registered()


def test_kill_9_leaves_nothing_registered(test_object):
    skip_without_struct_ops_links()
    kill_9_leaves_nothing(test_object("attach_struct_ops"), f"link = obj.attach_struct_ops({NAME!r})")
    assert NAME not in registered()
