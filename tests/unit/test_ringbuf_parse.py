"""The ring buffer's parsers on synthetic rings: the headers the kernel writes (length, BUSY and
DISCARD bits), laid out as it lays them, and the data area mapped twice emulated by a doubled
buffer. No kernel, no root: what a drain delivers, skips, where it stops, and where the consumer
position goes."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest

from bpfscope.ringbuf import Parsed, parse_fixed, parse_variable

BUSY = 1 << 31
DISCARD = 1 << 30


class SyntheticRing:
    """A ring's data area of `size` bytes (a power of two) and its producer position, written as
    the kernel writes it: an 8-byte header (length and bits, then a page offset we leave 0) and the
    record, 8-byte aligned, wrapping at the end."""

    def __init__(self, size: int, start: int = 0) -> None:
        self.area = np.zeros(size, dtype=np.uint8)
        self.consumer = self.producer = start
        self.headers: list[int] = []  # position of each record put, in order

    def put(self, payload: bytes, *, busy: bool = False, discard: bool = False) -> int:
        header = struct.pack("=II", len(payload) | (BUSY if busy else 0) | (DISCARD if discard else 0), 0)
        at = self.producer
        self._write(at, header + payload)
        self.headers.append(at)
        self.producer += (8 + len(payload) + 7) & ~7
        return at

    def commit(self, at: int) -> None:
        """Clears the BUSY bit of the record at `at`, as bpf_ringbuf_submit does."""
        (length,) = struct.unpack("=I", self._read(at, 4))
        self._write(at, struct.pack("=I", length & ~BUSY))

    def _indices(self, at: int, count: int) -> np.ndarray[Any, Any]:
        return (at + np.arange(count)) % len(self.area)

    def _write(self, at: int, raw: bytes) -> None:
        self.area[self._indices(at, len(raw))] = np.frombuffer(raw, dtype=np.uint8)

    def _read(self, at: int, count: int) -> bytes:
        return self.area[self._indices(at, count)].tobytes()

    def data(self) -> np.ndarray[Any, Any]:
        """The data area as the reader sees it: mapped twice, back to back."""
        return np.concatenate([self.area, self.area])

    def fixed(self, size: int, *, holding: bool = False) -> Parsed:
        parsed = parse_fixed(self.data(), self.consumer, self.producer, size=size, holding=holding)
        self.consumer = parsed.consumer
        return parsed

    def variable(self) -> Parsed:
        parsed = parse_variable(self.data(), self.consumer, self.producer)
        self.consumer = parsed.consumer
        return parsed


def record(seq: int, size: int = 16) -> bytes:
    """A record of `size` bytes that says which it is: its sequence number, then a fill byte."""
    return struct.pack("=Q", seq) + bytes([seq & 0xFF]) * (size - 8)


def seqs(parsed: Parsed) -> list[int]:
    assert parsed.records.dtype == np.uint8 and parsed.records.ndim == 2
    return [int(row[:8].view(np.uint64)[0]) for row in parsed.records]


def test_an_empty_ring_gives_nothing_and_keeps_the_position() -> None:
    ring = SyntheticRing(256, start=4096 + 40)
    parsed = ring.fixed(16)
    assert parsed.records.shape == (0, 16)
    assert (parsed.consumer, parsed.blocked, parsed.foreign) == (4096 + 40, False, None)
    parsed = ring.variable()
    assert len(parsed.records) == 0 and (parsed.consumer, parsed.blocked) == (4096 + 40, False)


def test_committed_records_are_delivered_in_order_with_their_bytes() -> None:
    ring = SyntheticRing(4096)
    for seq in range(100):
        ring.put(record(seq, 20))  # 20 bytes: 4 bytes of padding after each, 32-byte slots
    parsed = ring.fixed(20)
    assert seqs(parsed) == list(range(100))
    assert [row.tobytes() for row in parsed.records] == [record(seq, 20) for seq in range(100)]
    assert (parsed.consumer, parsed.blocked, parsed.foreign) == (100 * 32, False, None)


def test_a_busy_record_stops_the_batch_though_later_ones_are_committed() -> None:
    ring = SyntheticRing(4096)
    ring.put(record(0))
    held = ring.put(record(1), busy=True)
    ring.put(record(2))
    parsed = ring.fixed(16)
    assert seqs(parsed) == [0]
    assert parsed.consumer == held and parsed.blocked and parsed.foreign is None
    # At the head it still stops the batch: nothing, and the position stays.
    parsed = ring.fixed(16)
    assert seqs(parsed) == [] and parsed.consumer == held and parsed.blocked
    ring.commit(held)
    parsed = ring.fixed(16)
    assert seqs(parsed) == [1, 2] and parsed.consumer == ring.producer and not parsed.blocked


def test_a_record_committed_while_the_headers_are_read_is_read_on_not_taken_as_foreign() -> None:
    # The producer commits the busy record between the reader's look at all headers and its look
    # at the first one it could not take: that record is of our size now, not of another.
    ring = SyntheticRing(4096)
    ring.put(record(0))
    held = ring.put(record(1), busy=True)
    ring.put(record(2))
    data = ring.data()
    half = len(data) // 2

    def commit_meanwhile() -> None:
        data[held + 3] &= 0x7F  # the BUSY bit, in both mappings
        data[half + held + 3] &= 0x7F

    parsed = parse_fixed(data, ring.consumer, ring.producer, size=16, fence=commit_meanwhile)
    assert seqs(parsed) == [0, 1, 2] and parsed.foreign is None and not parsed.blocked
    assert parsed.consumer == ring.producer


def test_discarded_records_are_skipped_and_not_an_error() -> None:
    ring = SyntheticRing(4096)
    for seq in range(30):
        ring.put(record(seq), discard=seq % 3 == 0)
    ring.put(record(99, 40), discard=True)  # a discarded record of another size is skipped too
    ring.put(record(30))
    parsed = ring.fixed(16)
    assert seqs(parsed) == [seq for seq in range(30) if seq % 3] + [30]
    assert (parsed.consumer, parsed.blocked, parsed.foreign) == (ring.producer, False, None)


def test_a_ring_of_discarded_records_moves_the_consumer_past_them() -> None:
    ring = SyntheticRing(1024)
    for seq in range(10):
        ring.put(record(seq), discard=True)
    parsed = ring.fixed(16)
    assert seqs(parsed) == [] and parsed.consumer == ring.producer and not parsed.blocked


@pytest.mark.parametrize("foreign", [0, 8, 12, 24, 40, 100])
def test_a_record_of_a_foreign_size_comes_after_the_ones_before_it_then_is_stepped_past(foreign: int) -> None:
    ring = SyntheticRing(4096)
    ring.put(record(0))
    ring.put(record(1))
    at = ring.put(bytes(foreign))
    ring.put(record(2))
    first = ring.fixed(16)
    assert seqs(first) == [0, 1]
    assert first.consumer == at and first.blocked and first.foreign is None  # delivered first; not passed
    head = ring.fixed(16)
    assert seqs(head) == [] and head.blocked and head.foreign == foreign  # the drain that raises
    assert head.consumer == at + ((8 + foreign + 7) & ~7)
    after = ring.fixed(16)
    assert seqs(after) == [2] and after.consumer == ring.producer and after.foreign is None


def test_a_foreign_record_at_the_head_waits_while_the_caller_holds_records() -> None:
    """A drain's second pass (`holding`: its first pass delivered) leaves it to the next drain."""
    ring = SyntheticRing(4096)
    at = ring.put(bytes(8))
    parsed = ring.fixed(16, holding=True)
    assert seqs(parsed) == [] and parsed.consumer == at and parsed.blocked and parsed.foreign is None


def test_records_that_wrap_past_the_end_read_whole_from_the_second_mapping() -> None:
    """Hundreds of laps of a 256-byte ring in 24-byte slots, which do not divide it: records start
    at every 8-byte offset and many straddle the end."""
    ring = SyntheticRing(256)
    delivered: list[int] = []
    straddled = 0
    seq = 0
    for round_ in range(500):
        for _ in range(round_ % 10 + 1):  # at most 10 slots: 240 bytes, within the ring
            straddled += ring.producer % 256 + 24 > 256
            ring.put(record(seq))
            seq += 1
        parsed = ring.fixed(16)
        assert [row.tobytes() for row in parsed.records] == [record(s) for s in seqs(parsed)]
        delivered += seqs(parsed)
        assert parsed.consumer == ring.producer
    assert delivered == list(range(seq))
    assert ring.producer // 256 > 100 and straddled > 100


def test_the_second_mapping_is_what_makes_a_straddling_record_whole() -> None:
    ring = SyntheticRing(64, start=48)
    ring.put(record(7))  # header at 48..56, record at 56..64 and 0..8
    unmapped = np.concatenate([ring.area, np.zeros(64, dtype=np.uint8)])  # no second mapping behind the end
    torn = parse_fixed(unmapped, 48, ring.producer, size=16)
    assert torn.records[0].tobytes() == record(7)[:8] + bytes(8)
    assert ring.fixed(16).records[0].tobytes() == record(7)


def test_a_ring_filled_exactly_is_read_whole() -> None:
    """producer - consumer == the ring's size: every byte a record, the first straddling nothing and
    the pass reading a whole ring's length out of the doubled area."""
    for start in (0, 96, 256 * 7 + 160):
        ring = SyntheticRing(256, start=start)
        for seq in range(8):
            ring.put(record(seq, 24))  # 32-byte slots: 8 fill 256 bytes
        assert ring.producer - ring.consumer == 256
        parsed = ring.fixed(24)
        assert seqs(parsed) == list(range(8)) and parsed.consumer == ring.producer and not parsed.blocked


def test_a_bytes_like_data_area_reads_as_an_array_does() -> None:
    ring = SyntheticRing(256)
    for seq in range(3):
        ring.put(record(seq))
    parsed = parse_fixed(ring.data().tobytes(), 0, ring.producer, size=16)
    assert seqs(parsed) == [0, 1, 2]
    parsed = parse_variable(memoryview(ring.data().tobytes()), 0, ring.producer)
    assert list(parsed.records) == [record(seq) for seq in range(3)]


def test_records_of_any_size_come_as_bytes_through_busy_discard_and_wrap() -> None:
    ring = SyntheticRing(256, start=200)
    payloads = [b"a" * 3, b"", record(1, 40), b"discarded" * 2, b"z" * 61, b"held"]
    ring.put(payloads[0])
    ring.put(payloads[1])
    ring.put(payloads[2])  # straddles the end
    ring.put(payloads[3], discard=True)
    ring.put(payloads[4])
    held = ring.put(payloads[5], busy=True)
    ring.put(b"after")
    parsed = ring.variable()
    assert list(parsed.records) == [payloads[0], payloads[1], payloads[2], payloads[4]]
    assert all(type(sample) is bytes for sample in parsed.records)
    assert parsed.consumer == held and parsed.blocked and parsed.foreign is None
    ring.commit(held)
    parsed = ring.variable()
    assert list(parsed.records) == [b"held", b"after"] and parsed.consumer == ring.producer
