"""Tail calls through a PROG_ARRAY: the slot the object fills at load (a static initialiser) and
slots filled, swapped and emptied from Python, counted exactly through BPF_PROG_TEST_RUN."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bpfscope import _libbpf
from bpfscope.errors import BpfscopeError
from bpfscope.maps import ProgramArray
from bpfscope.object import Object, load
from bpfscope.program import Program, XdpAction

PACKET = bytes(64)


@pytest.fixture
def obj(test_object) -> Iterator[Object]:
    with load(test_object("tail_calls")) as loaded:
        yield loaded


def program_id(program: Program) -> int:
    return int(_libbpf.obj_info(program.fd, _libbpf.BpfProgInfo(), program.name).id)


def run(obj: Object, times: int) -> XdpAction:
    return obj.programs["dispatch"].test_run(PACKET, repeat=times).action


def steps(obj: Object) -> list[int]:
    return [count for _, count in sorted(obj.maps["steps"].items())]


def test_the_static_initialiser_fills_the_jump_table_at_load(obj: Object) -> None:
    jumps = obj.maps["jumps"]
    assert isinstance(jumps, ProgramArray)
    assert jumps.items() == [(0, program_id(obj.programs["step_one"]))]
    assert run(obj, 100) == XdpAction.DROP  # through step_one, which finds slot 1 empty
    assert steps(obj) == [100, 100, 0, 0]


def test_slots_filled_swapped_and_emptied_at_run_time_change_where_the_chain_goes(obj: Object) -> None:
    jumps = obj.maps["jumps"]
    jumps[1] = obj.programs["step_two"]
    assert jumps[1] == program_id(obj.programs["step_two"])
    assert run(obj, 30) == XdpAction.PASS
    assert steps(obj) == [30, 30, 30, 0]

    jumps[1] = obj.programs["step_alt"].fd  # a program's fd does as well
    assert run(obj, 20) == XdpAction.TX
    assert steps(obj) == [50, 50, 30, 20]

    del jumps[1]
    assert 1 not in jumps
    assert run(obj, 10) == XdpAction.DROP
    del jumps[0]
    assert run(obj, 5) == XdpAction.ABORTED
    assert steps(obj) == [65, 60, 30, 20]
    assert jumps.items() == []


def test_a_slot_takes_only_a_program(obj: Object) -> None:
    jumps = obj.maps["jumps"]
    with pytest.raises(BpfscopeError, match="update map 'jumps'") as raised:
        jumps[2] = obj.maps["steps"].fd
    assert "\n" not in str(raised.value)
    assert 2 not in jumps
