"""output.batchlines: the grouping must be exact (equal records share a rendering, different ones
never do, even when their hashes collide) and the vectorised stamps must read as the formatting
functions of the standard library would print them."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpfscope.output import batchlines
from bpfscope.output.batchlines import clock_stamps, distinct, epoch_stamps, join_lines

RECORD = np.dtype([("time_ns", "<u8"), ("pid", "<u4"), ("ret", "<i4"), ("path", "S24")])


def records(rows: list[tuple[int, int, int, bytes]]) -> np.ndarray:
    return np.array(rows, dtype=RECORD)


def check_grouping(batch: np.ndarray, ignore: tuple[str, ...]) -> None:
    first, inverse = distinct(batch, ignore)
    kept = [n for n in batch.dtype.names if n not in ignore]
    as_tuples = [tuple(r[n] for n in kept) for r in batch]
    representatives = [as_tuples[i] for i in first]
    assert len(set(representatives)) == len(representatives)  # each group once
    assert [representatives[k] for k in inverse] == as_tuples  # every record in its own group


@given(st.lists(st.tuples(st.integers(0, 2**63), st.integers(0, 3), st.integers(-3, 3),
                          st.sampled_from([b"/a", b"/b", b"/dev/null", b""])), max_size=60))
@settings(max_examples=200, deadline=None)
def test_groups_are_exactly_the_equal_records(rows: list[tuple[int, int, int, bytes]]) -> None:
    check_grouping(records(rows), ("time_ns",))


def test_time_is_ignored_and_nothing_else() -> None:
    batch = records([(1, 7, 3, b"/x"), (2, 7, 3, b"/x"), (3, 7, 4, b"/x"), (4, 8, 3, b"/x"), (5, 7, 3, b"/y")])
    first, inverse = distinct(batch, ("time_ns",))
    assert len(first) == 4 and inverse[0] == inverse[1] and len(set(inverse[1:].tolist())) == 4
    first, _ = distinct(batch)  # nothing ignored: every record differs in its time
    assert len(first) == 5


def test_a_field_in_the_middle_can_be_ignored() -> None:
    batch = records([(1, 7, 3, b"/x"), (1, 8, 3, b"/x"), (1, 9, 4, b"/x")])
    check_grouping(batch, ("pid",))
    assert len(distinct(batch, ("pid",))[0]) == 2


def test_colliding_hashes_still_keep_different_records_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every multiplier zero: every record hashes alike, so only the comparison can tell them apart.
    monkeypatch.setattr(batchlines, "_MULTIPLIERS", np.zeros(512, dtype=np.uint64))
    batch = records([(1, 7, 3, b"/x"), (2, 7, 3, b"/x"), (3, 7, 3, b"/y"), (4, 9, 3, b"/x")])
    check_grouping(batch, ("time_ns",))


def test_records_that_are_not_8_byte_multiples() -> None:
    odd = np.dtype([("time_ns", "<u8"), ("code", "u1"), ("name", "S6")])  # 15 bytes
    batch = np.array([(1, 1, b"a"), (2, 1, b"a"), (3, 2, b"a")], dtype=odd)
    first, inverse = distinct(batch, ("time_ns",))
    assert len(first) == 2 and inverse[0] == inverse[1] != inverse[2]


@given(st.lists(st.integers(946_684_800 * 10**9, 4_102_444_800 * 10**9), min_size=1, max_size=40))
def test_epoch_stamps_read_as_printf_would(times_ns: list[int]) -> None:
    stamps = epoch_stamps(np.array(times_ns, dtype=np.int64), b'{"t":', b",")
    assert stamps == [b'{"t":%d.%06d,' % (t // 10**9, t // 1000 % 10**6) for t in times_ns]


def test_epoch_stamps_of_seconds_with_fewer_digits() -> None:
    stamps = epoch_stamps(np.array([5 * 10**9 + 7000, 10**18], dtype=np.int64))
    assert stamps == [b"5.000007", b"1000000000.000000"]


@given(st.lists(st.integers(0, 4_102_444_800 * 10**9), min_size=1, max_size=40))
def test_clock_stamps_read_as_strftime_would(times_ns: list[int]) -> None:
    stamps = clock_stamps(np.array(times_ns, dtype=np.int64), after=b" ")
    assert stamps == [time.strftime("%H:%M:%S", time.localtime(t // 10**9)).encode() + b".%06d " % (t // 1000 % 10**6)
                      for t in times_ns]


def test_join_lines_puts_each_stamp_before_its_records_rendering() -> None:
    assert join_lines([b"1 ", b"2 ", b"3 "], [b"a\n", b"b\n"], np.array([1, 0, 1])) == b"1 b\n2 a\n3 b\n"
    assert join_lines([], [], np.array([], dtype=np.intp)) == b""
