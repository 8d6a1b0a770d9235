"""Global variables after load: .bss, .data and .data.NAME read and written from Python while a
program runs (BPF_PROG_TEST_RUN), through the memory the kernel maps (Linux 5.5+) and through map
lookups and updates, as on kernels before that; .rodata read only."""

from __future__ import annotations

import errno
from collections.abc import Iterator

import pytest

from bpfscope.errors import BpfscopeError, TypeMismatchError
from bpfscope.globals import Globals
from bpfscope.object import Object, ObjectSpec, load
from bpfscope.program import XdpAction

PACKET = bytes(64)


@pytest.fixture
def obj(test_object) -> Iterator[Object]:
    with load(test_object("globals")) as loaded:
        yield loaded


def run(obj: Object, times: int = 1) -> XdpAction:
    return obj.programs["count_runs"].test_run(PACKET, repeat=times).action


@pytest.fixture(params=["mapped", "by_lookup"])
def sections(request: pytest.FixtureRequest, obj: Object) -> Iterator[dict[str, Globals]]:
    """The object's sections as Object gives them (mapped into memory here), or read and written by map
    lookups and updates, as on a kernel before 5.5."""
    if request.param == "mapped":
        yield {name: obj.datasec(name) for name in (".bss", ".data", ".data.custom")}
        return
    made = {name: Globals(obj.datasec(name).map, mapped=False) for name in (".bss", ".data", ".data.custom")}
    yield made
    for section in made.values():
        section.close()


def test_the_kernel_maps_the_sections_here(obj: Object) -> None:
    assert obj.bss.mapped and obj.data.mapped and obj.datasec(".data.custom").mapped
    assert obj.bss is obj.datasec(".bss")
    assert list(obj.bss) == ["runs", "total", "stats"]
    assert list(obj.data) == ["step", "label"]


def test_a_counter_the_program_increments_reads_exactly(sections: dict[str, Globals], obj: Object) -> None:
    bss = sections[".bss"]
    assert bss["runs"] == 0
    run(obj, 1000)
    assert bss["runs"] == 1000
    assert bss["total"] == 1000  # step 1
    stats = bss["stats"]
    assert (stats.packets, stats.bytes) == (1000, 1000 * len(PACKET))
    assert sections[".data.custom"]["custom_runs"] == 1000


def test_a_value_written_from_python_changes_what_the_program_does(sections: dict[str, Globals], obj: Object) -> None:
    data, custom, bss = sections[".data"], sections[".data.custom"], sections[".bss"]
    assert data["step"] == 1 and data["label"] == b"start"
    data["step"] = 5
    run(obj, 10)
    assert bss["total"] == 50
    custom["verdict"] = int(XdpAction.DROP)
    assert run(obj) == XdpAction.DROP
    custom["verdict"] = int(XdpAction.TX)
    assert run(obj) == XdpAction.TX
    data["label"] = b"five"
    assert data["label"] == b"five"
    bss["runs"] = 100
    run(obj, 2)
    assert bss["runs"] == 102


def test_a_struct_variable_is_written_whole(sections: dict[str, Globals], obj: Object) -> None:
    bss = sections[".bss"]
    bss["stats"] = {"packets": 7, "bytes": 9}
    run(obj)
    assert bss["stats"] == type(bss["stats"])(packets=8, bytes=9 + len(PACKET))


def test_the_mapped_array_is_live(obj: Object) -> None:
    view = obj.bss.array
    assert view.dtype.names == ("runs", "total", "stats")
    run(obj, 3)
    assert int(view["runs"][0]) == 3  # no read in between: the program wrote this memory
    view["total"][0] = 40
    run(obj)
    assert obj.bss["total"] == 41
    snapshot = obj.bss.read()
    run(obj)
    assert int(snapshot["runs"][0]) == 4 and obj.bss["runs"] == 5


def test_rodata_reads_and_refuses_writes_in_one_line(test_object) -> None:
    spec = ObjectSpec.open(test_object("globals"))
    spec.rodata["cfg_scale"] = 3
    with spec.load() as obj:
        rodata = obj.datasec(".rodata")
        assert rodata["cfg_scale"] == 3
        with pytest.raises(BpfscopeError, match="frozen") as raised:
            rodata["cfg_scale"] = 4
        assert raised.value.errno == errno.EROFS
        obj.data["step"] = 2
        run(obj, 5)
        assert obj.bss["total"] == 30


def test_unknown_names_say_what_there_is(obj: Object) -> None:
    with pytest.raises(KeyError, match="has: runs, total, stats"):
        obj.bss["nope"] = 1
    with pytest.raises(BpfscopeError, match="no .data.other section") as raised:
        obj.datasec(".data.other")
    assert raised.value.errno == errno.ENOENT
    with pytest.raises(TypeMismatchError):
        obj.data["step"] = -1  # an unsigned variable


def test_a_map_that_is_no_data_section_is_refused(test_object) -> None:
    with load(test_object("map_types")) as other, pytest.raises(TypeMismatchError, match="no data section"):
        Globals(other.maps["slots"])


def test_sections_close_with_the_object(test_object) -> None:
    obj = load(test_object("globals"))
    bss = obj.bss
    obj.close()
    assert not bss.mapped
    with pytest.raises(BpfscopeError, match="closed"):
        bss["runs"]
    assert len(bss) == 3
