"""The perf buffer's parsers on synthetic perf rings: records laid out as the kernel lays them
(struct perf_event_header; a sample's u32 size and raw bytes padded to 8; PERF_RECORD_LOST's id and
count) in a data area mapped once, so records wrap around its end. No kernel, no root: what a pass
delivers, counts, steps past, and where the tail goes."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpfscope.perfbuf import parse_fixed, parse_variable, sample_size

SAMPLE, LOST, THROTTLE = 9, 2, 5


class SyntheticPerfRing:
    """A perf ring's data area of `size` bytes (a power of two) and its tail and head positions,
    written as the kernel writes them."""

    def __init__(self, size: int, start: int = 0) -> None:
        self.area = np.zeros(size, dtype=np.uint8)
        self.tail = self.head = start

    def sample(self, payload: bytes) -> None:
        padded = payload.ljust(((len(payload) + 4 + 7) & ~7) - 4, b"\0")
        self._put(struct.pack("=IHHI", SAMPLE, 0, 12 + len(padded), len(padded)) + padded)

    def lost(self, count: int) -> None:
        self._put(struct.pack("=IHHQQ", LOST, 0, 24, 77, count))

    def throttle(self) -> None:
        self._put(struct.pack("=IHHQQQ", THROTTLE, 0, 32, 1, 2, 3))

    def _put(self, record: bytes) -> None:
        at = (self.head + np.arange(len(record))) % len(self.area)
        self.area[at] = np.frombuffer(record, dtype=np.uint8)
        self.head += len(record)

    def fixed(self, size: int, head: int | None = None) -> Any:
        parsed = parse_fixed(self.area, self.tail, self.head if head is None else head, size=size)
        self.tail = parsed.tail
        return parsed

    def variable(self, head: int | None = None) -> Any:
        parsed = parse_variable(self.area, self.tail, self.head if head is None else head)
        self.tail = parsed.tail
        return parsed


def record(seq: int) -> bytes:
    """A 20-byte record: its raw size is 20 (4 + 20 is a multiple of 8), so samples are 32 bytes."""
    return struct.pack("=QQI", seq, ~seq & 0xFFFFFFFFFFFFFFFF, seq & 0xFFFFFFFF)


def seqs(rows: np.ndarray[Any, Any]) -> list[int]:
    return [struct.unpack_from("=Q", row.tobytes())[0] for row in rows]


def test_sample_size_pads_the_size_word_and_the_bytes_to_8() -> None:
    assert [sample_size(n) for n in (1, 4, 5, 12, 20, 24)] == [16, 16, 24, 24, 32, 40]


def test_samples_are_delivered_in_order_and_the_tail_reaches_the_head() -> None:
    ring = SyntheticPerfRing(4096)
    for seq in range(50):
        ring.sample(record(seq))
    parsed = ring.fixed(20)
    assert parsed.records.shape == (50, 20)
    assert seqs(parsed.records) == list(range(50))
    assert (parsed.tail, parsed.lost, parsed.foreign) == (ring.head, 0, ())
    assert len(ring.fixed(20).records) == 0  # nothing twice


def test_padding_beyond_the_record_is_left_out() -> None:
    ring = SyntheticPerfRing(1024)
    ring.sample(b"abcdefghijklm")  # 13 bytes: raw size 20, three of them padding
    parsed = ring.fixed(13)
    assert parsed.records.tobytes() == b"abcdefghijklm"


@pytest.mark.parametrize("start", [4096 - 8, 4096 - 16, 4096 - 24, 3 * 4096 - 40])
def test_records_that_wrap_around_the_end_are_read_whole_once(start: int) -> None:
    ring = SyntheticPerfRing(4096, start)
    for seq in range(20):
        ring.sample(record(seq))
    parsed = ring.fixed(20)
    assert seqs(parsed.records) == list(range(20))
    assert parsed.tail == ring.head
    assert [struct.unpack_from("=QQ", row.tobytes())[1] for row in parsed.records] == [
        ~seq & 0xFFFFFFFFFFFFFFFF for seq in range(20)]


def test_lost_records_are_counted_and_the_samples_around_them_delivered() -> None:
    ring = SyntheticPerfRing(4096)
    ring.sample(record(1))
    ring.lost(7)
    ring.sample(record(2))
    ring.throttle()  # a record type the reader does not use: skipped
    ring.lost(5)
    ring.sample(record(3))
    parsed = ring.fixed(20)
    assert seqs(parsed.records) == [1, 2, 3]
    assert parsed.lost == 12
    assert parsed.tail == ring.head


def test_samples_of_another_size_are_stepped_past_and_listed() -> None:
    ring = SyntheticPerfRing(4096)
    ring.sample(record(1))
    ring.sample(b"12345678")  # raw size 12
    ring.sample(record(2))
    parsed = ring.fixed(20)
    assert seqs(parsed.records) == [1, 2]
    assert parsed.foreign == (12,)


def test_a_record_the_head_cuts_is_left_for_the_next_pass() -> None:
    ring = SyntheticPerfRing(4096, 4096 - 48)
    ring.sample(record(1))
    ring.sample(record(2))
    ring.sample(record(3))
    first = ring.fixed(20, head=ring.head - 16)  # half of the third sample, across the end
    assert seqs(first.records) == [1, 2]
    assert first.tail == ring.head - 32
    assert seqs(ring.fixed(20).records) == [3]
    assert ring.tail == ring.head


def test_bytes_that_are_no_record_end_the_pass_at_the_head() -> None:
    ring = SyntheticPerfRing(1024)
    ring.sample(record(1))
    ring.head += 8  # a header of size 0
    parsed = ring.fixed(20)
    assert seqs(parsed.records) == [1]
    assert parsed.tail == ring.head


def test_records_of_any_size_come_as_bytes_with_the_kernels_padding() -> None:
    ring = SyntheticPerfRing(512, 512 - 24)
    text = b"0123456789abcdefghijklmnopqrstuv"
    for size in (1, 5, 8, 13, 32):
        ring.sample(text[:size])
    ring.lost(3)
    parsed = ring.variable()
    assert [len(sample) for sample in parsed.records] == [4, 12, 12, 20, 36]
    assert [sample[:size] for sample, size in zip(parsed.records, (1, 5, 8, 13, 32))] == [
        text[:size] for size in (1, 5, 8, 13, 32)]
    assert (parsed.lost, parsed.tail) == (3, ring.head)


def test_an_empty_ring_gives_nothing() -> None:
    ring = SyntheticPerfRing(1024, 100 * 1024)
    assert ring.fixed(20).records.shape == (0, 20)
    assert len(ring.variable().records) == 0


@settings(max_examples=200, deadline=None)
@given(start=st.integers(0, 1 << 20).map(lambda n: n * 8),
       events=st.lists(st.one_of(st.integers(0, 1 << 40), st.integers(1, 40).map(lambda n: -n)), max_size=60))
def test_fixed_and_variable_parsers_agree_on_any_mix_of_records(start: int, events: list[int]) -> None:
    """Samples (seq >= 0) and lost records (a negative count), anywhere in a 4 KiB ring."""
    ring = SyntheticPerfRing(4096, start)
    for event in events:
        if event >= 0:
            ring.sample(record(event))
        else:
            ring.lost(-event)
    tail = ring.tail
    fixed = ring.fixed(20)
    ring.tail = tail
    variable = ring.variable()
    expected = [event for event in events if event >= 0]
    assert seqs(fixed.records) == expected
    assert [struct.unpack_from("=Q", sample)[0] for sample in variable.records] == expected
    assert fixed.lost == variable.lost == -sum(event for event in events if event < 0)
    assert fixed.tail == variable.tail == ring.head
