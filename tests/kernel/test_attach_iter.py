"""Iterators (Program.attach_iter, or attach() from the section): each read is a fresh walk, and what the
program wrote comes back as records (bpf_seq_write) or text (bpf_seq_printf)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator

import pytest

from bpfscope import _libbpf
from bpfscope.errors import BpfscopeError, NotSupportedError
from bpfscope.link import IterLink
from bpfscope.object import Object, ObjectSpec
from bpfscope.program import CgroupIterOrder
from tests.kernel.attach_support import fresh_cgroup, kill_9_leaves_nothing, one_line

# Loaded on their own, each by the one test of it: some kernels refuse iter/bpf_map_elem programs to root
# (this project's development kernel does, EPERM with an empty verifier log), and cgroup iterators came in 6.1.
MAP_ELEMENTS, CGROUPS = "dump_values", "dump_cgroup_ids"


def load_iterators(path, *names: str) -> Object:
    """The iterators named, or all but those loaded on their own."""
    spec = ObjectSpec.open(path)
    for name, program in spec.programs.items():
        program.autoload = name in names if names else name not in (MAP_ELEMENTS, CGROUPS)
    return spec.load()


def load_alone(path, name: str) -> Object:
    try:
        return load_iterators(path, name)
    except BpfscopeError as exc:
        pytest.skip(f"this kernel refuses {name}: {exc}")


@pytest.fixture
def obj(test_object) -> Iterator[Object]:
    with load_iterators(test_object("attach_iter")) as loaded:
        yield loaded


@pytest.fixture
def map_elements(test_object) -> Iterator[Object]:
    with load_alone(test_object("attach_iter"), MAP_ELEMENTS) as loaded:
        yield loaded


def test_task_iterator_from_its_section_finds_the_test_process(obj):
    with obj.programs["dump_tasks"].attach() as link:
        assert isinstance(link, IterLink)
        tasks = link.records(obj.exported_type("task_record"))
    assert os.getpid() in set(tasks["tgid"])
    assert len(tasks) > 1


def attach_iter_or_skip(program, **walk):
    """attach_iter(**walk), or a skip where the kernel's iterators take no pid= or tid= (before Linux 6.1)."""
    try:
        return program.attach_iter(**walk)
    except NotSupportedError as exc:
        one_line(exc)
        pytest.skip(str(exc))


def test_task_iterator_of_one_process_lists_exactly_its_threads(obj):
    stop = threading.Event()
    threads = [threading.Thread(target=stop.wait) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        with attach_iter_or_skip(obj.programs["dump_tasks"], pid=os.getpid()) as link:
            tasks = link.records(obj.exported_type("task_record"))
            mine = {int(tid) for tid in os.listdir("/proc/self/task")}
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert set(tasks["tgid"]) == {os.getpid()}
    assert sorted(tasks["pid"]) == sorted(mine)  # each thread once
    assert len(mine) >= 4


def test_task_file_iterator_sees_an_fd_come_and_go(obj):
    record = obj.exported_type("file_record")
    with attach_iter_or_skip(obj.programs["dump_files"], pid=os.getpid()) as link:
        memfd = os.memfd_create("bpfscope-test")
        # Far above the lowest free fd, which each read's own iterator fd takes.
        fd = os.dup2(memfd, 900)
        os.close(memfd)
        try:
            opened = link.records(record)
        finally:
            os.close(fd)
        closed = link.records(record)
    assert set(opened["tgid"]) == {os.getpid()}
    assert fd in set(opened["fd"])
    assert fd not in set(closed["fd"])


def test_map_iterator_lists_the_object_maps(obj):
    values_id = _libbpf.obj_info(obj.maps["values"].fd, _libbpf.BpfMapInfo(), "values").id
    with obj.programs["dump_map_ids"].attach_iter() as link:
        ids = {int(line) for line in link.text().split()}
    assert values_id in ids


def test_map_element_iterator_walks_the_map_given(map_elements):
    obj = map_elements
    expected = {key: key * key for key in range(10)}
    for key, value in expected.items():
        obj.maps["values"][key] = value
    with obj.programs[MAP_ELEMENTS].attach_iter(map=obj.maps["values"]) as link:
        assert "over map 'values'" in link.description
        walked = dict(map(int, line.split()) for line in link.text().splitlines())
        obj.maps["values"][99] = 1
        assert dict(map(int, line.split()) for line in link.text().splitlines()) == {**expected, 99: 1}
    assert walked == expected
    with pytest.raises(BpfscopeError, match="walks one map: give it as map=") as no_map:
        obj.programs[MAP_ELEMENTS].attach_iter()
    with pytest.raises(BpfscopeError, match="cannot attach from its section alone: attach it with "
                                            r"attach_iter\(map=...\)") as auto:
        obj.programs[MAP_ELEMENTS].attach()
    for exc in (no_map.value, auto.value):
        one_line(exc)


def test_tcp_and_udp_iterators_list_the_test_sockets(obj):
    with socket.create_server(("127.0.0.1", 0)) as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        with obj.programs["dump_tcp_ports"].attach() as tcp_link, obj.programs["dump_udp_ports"].attach() as udp_link:
            assert tcp.getsockname()[1] in {int(port) for port in tcp_link.text().split()}
            assert udp.getsockname()[1] in {int(port) for port in udp_link.text().split()}


def test_cgroup_iterator_walks_from_the_cgroup_given(test_object):
    with load_alone(test_object("attach_iter"), CGROUPS) as obj, contextlib.ExitStack() as stack:
        root = stack.enter_context(fresh_cgroup())
        children = [root / "a", root / "b"]
        for child in children:
            child.mkdir()
            stack.callback(child.rmdir)
        ids = {path: os.stat(path).st_ino for path in (root, *children)}  # a cgroup's id is its inode
        program = obj.programs[CGROUPS]
        with attach_iter_or_skip(program, cgroup=root) as alone:
            assert [int(line) for line in alone.text().split()] == [ids[root]]
        with program.attach_iter(cgroup=str(root), order=CgroupIterOrder.DESCENDANTS_PRE) as tree:
            walked = [int(line) for line in tree.text().split()]
        assert walked[0] == ids[root] and sorted(walked) == sorted(ids.values())


def test_bad_input_is_one_line(obj):
    with pytest.raises(BpfscopeError, match="give one of map=, pid=, tid=, cgroup=") as two:
        obj.programs["dump_tasks"].attach_iter(pid=1, tid=1)
    one_line(two.value)


def test_kill_9_leaves_nothing_attached(test_object):
    kill_9_leaves_nothing(test_object("attach_iter"), "link = obj.programs['dump_tasks'].attach()",
                          configure=f"program.autoload = name not in {(MAP_ELEMENTS, CGROUPS)!r}")
