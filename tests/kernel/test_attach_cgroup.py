"""Cgroup hooks (Program.attach_cgroup): each program, attached to a fresh cgroup v2 directory, counts
exactly what a process the test puts in that cgroup does, and nothing once the link is closed."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bpfscope.errors import BpfscopeError
from bpfscope.object import Object, load
from bpfscope.program import AttachType
from tests.kernel.attach_support import fresh_cgroup, hits, kill_9_leaves_nothing, links_of, one_line

COUNT = 25

# The child: moves itself into the cgroup argv[1], then does argv[2] argv[3] times.
ACTIONS = """
import os, socket, sys
cgroup, action, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
    f.write(str(os.getpid()))
family, host = (socket.AF_INET6, "::1") if action.endswith("6") else (socket.AF_INET, "127.0.0.1")
if action.startswith("udp"):  # datagrams from one socket of the cgroup to another
    receiver = socket.socket(family, socket.SOCK_DGRAM)
    receiver.bind((host, 0))
    sender = socket.socket(family, socket.SOCK_DGRAM)
    for _ in range(count):
        sender.sendto(b"x", receiver.getsockname())
        receiver.recvfrom(16)
elif action == "sockets":
    for _ in range(count):
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()
elif action.startswith("connect"):
    for _ in range(count):
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))
elif action.startswith("bind"):
    for _ in range(count):
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
elif action == "tcp":
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(count)
        for _ in range(count):
            with socket.create_connection(listener.getsockname()):
                listener.accept()[0].close()
elif action == "sysctl":
    for _ in range(count):
        fd = os.open("/proc/sys/net/ipv4/ip_forward", os.O_RDONLY)
        os.read(fd, 16)
        os.close(fd)
elif action == "devnull":
    for _ in range(count):
        os.close(os.open("/dev/null", os.O_RDONLY))
elif action.endswith("sockopt"):
    with socket.socket() as s:
        for _ in range(count):
            if action == "setsockopt":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            else:
                s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
"""


@pytest.fixture
def cgroup() -> Iterator[Path]:
    with fresh_cgroup() as path:
        yield path


@pytest.fixture
def obj(test_object) -> Iterator[Object]:
    with load(test_object("attach_cgroup")) as loaded:
        yield loaded


def run_in(cgroup: Path, action: str, count: int = COUNT) -> None:
    subprocess.run([sys.executable, "-c", ACTIONS, str(cgroup), action, str(count)], check=True, timeout=60)


@pytest.mark.parametrize(("program", "action", "hit"), [
    ("count_ingress", "udp4", "INGRESS"),
    ("count_egress", "udp4", "EGRESS"),
    ("count_sock_create", "sockets", "SOCK_CREATE"),
    ("count_connect4", "connect4", "CONNECT4"),
    ("count_connect6", "connect6", "CONNECT6"),
    ("count_bind4", "bind4", "BIND4"),
    ("count_bind6", "bind6", "BIND6"),
    ("count_sendmsg4", "udp4", "SENDMSG4"),
    ("count_sendmsg6", "udp6", "SENDMSG6"),
    ("count_recvmsg4", "udp4", "RECVMSG4"),
    ("count_recvmsg6", "udp6", "RECVMSG6"),
    ("count_tcp_connects", "tcp", "SOCKOPS"),
    ("count_sysctl_reads", "sysctl", "SYSCTL"),
    ("count_dev_null", "devnull", "DEVICE"),
    ("count_getsockopt", "getsockopt", "GETSOCKOPT"),
    ("count_setsockopt", "setsockopt", "SETSOCKOPT"),
])
def test_each_hook_counts_what_the_cgroup_does(obj, cgroup, program, action, hit):
    with obj.programs[program].attach_cgroup(cgroup) as link:
        assert str(cgroup) in link.description
        run_in(cgroup, action)
    run_in(cgroup, action, 5)  # detached: not counted
    assert hits(obj, hit) == COUNT


def test_a_path_relative_to_the_cgroup2_mount_and_another_hook(obj, cgroup):
    # SEC("cgroup_skb/ingress") on the egress hook: the hook given wins over the section's.
    with obj.programs["count_ingress"].attach_cgroup(cgroup.name, attach_type=AttachType.CGROUP_INET_EGRESS) as link:
        assert "cgroup_inet_egress" in link.description
        run_in(cgroup, "udp4")
    assert hits(obj, "INGRESS") == COUNT


def test_processes_outside_the_cgroup_are_not_counted(obj, cgroup):
    with obj.programs["count_connect4"].attach_cgroup(cgroup):
        subprocess.run([sys.executable, "-c", "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
                        ".connect(('127.0.0.1', 9))"], check=True, timeout=60)
    assert hits(obj, "CONNECT4") == 0


def test_bad_input_is_one_line_and_attaches_nothing(obj, cgroup):
    program = obj.programs["count_connect4"]
    with pytest.raises(BpfscopeError, match="no cgroup at /sys/fs/cgroup/no-such-cgroup") as missing:
        program.attach_cgroup("/sys/fs/cgroup/no-such-cgroup")
    with pytest.raises(BpfscopeError, match="is not a cgroup v2 directory") as not_v2:
        program.attach_cgroup("/proc")
    with pytest.raises(BpfscopeError, match="attach_cgroup attaches .* programs") as wrong_type:
        load_xdp_program_and_attach_cgroup(cgroup)
    for exc in (missing.value, not_v2.value, wrong_type.value):
        one_line(exc)
    assert links_of(program) == []


def load_xdp_program_and_attach_cgroup(cgroup: Path) -> None:
    from bpfscope.object import tool_object

    with load(tool_object("packets")) as packets:
        packets.programs["count_packets"].attach_cgroup(cgroup)


def test_auto_attach_names_attach_cgroup(obj):
    with pytest.raises(BpfscopeError, match=r"cannot attach from its section alone: attach it with "
                                            r"attach_cgroup\(path\)") as exc:
        obj.programs["count_connect4"].attach()
    one_line(exc.value)


def test_kill_9_leaves_nothing_attached(test_object, cgroup):
    kill_9_leaves_nothing(test_object("attach_cgroup"),
                          "link = obj.programs['count_connect4'].attach_cgroup(sys.argv[2])", str(cgroup))
