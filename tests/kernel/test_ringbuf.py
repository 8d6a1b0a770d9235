"""The ring buffer reader against the real kernel. tests/bpf/ringbuf_events.bpf.c writes known
records through BPF_PROG_TEST_RUN; every test checks what arrives field by field, and what the
kernel says was lost, exactly."""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import select
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from bpfscope import _libbpf
from bpfscope import ringbuf as ringbuf_module
from bpfscope.errors import BpfscopeError, TypeMismatchError
from bpfscope.maps import possible_cpus
from bpfscope.object import Object, ObjectSpec, load
from bpfscope.ringbuf import RingBuffer

pytestmark = pytest.mark.kernel

OBJECT = Path(__file__).parents[1] / "bpf" / "build" / platform.machine() / "ringbuf_events.bpf.o"
PLAIN = OBJECT.with_name("ringbuf_plain.bpf.o")  # rings declared without DEFINE_RINGBUF
PACKET = bytes(64)
MAGIC = 0xB0F5C0DE
TAG = b"bpfscop"
EVENT_SLOT = 32  # 8-byte header + struct test_event (24 bytes)
WIDE_SLOT = 48  # 8-byte header + struct wide_event (40 bytes): does not divide any ring size


@contextlib.contextmanager
def events_object(*, ring_bytes: int = 0, wide_bytes: int = 0, **rodata: Any) -> Iterator[Object]:
    spec = ObjectSpec.open(OBJECT)
    for name, value in rodata.items():
        spec.rodata[name] = value
    if ring_bytes:
        spec.maps["events"].max_entries = ring_bytes
    if wide_bytes:
        spec.maps["wide_events"].max_entries = wide_bytes
    with spec.load() as obj:
        yield obj


def emit(obj: Object, runs: int, program: str = "emit_events") -> None:
    # One test_run per run: with repeat > 1 an XDP test_run swaps the program into the XDP
    # dispatcher and out again (bpf_prog_change_xdp), tens of milliseconds each call.
    for _ in range(runs):
        obj.programs[program].test_run(PACKET)


def kernel_max_entries(fd: int) -> int:
    info = _libbpf.BpfMapInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    _libbpf.check(_libbpf.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), "map info")
    return int(info.max_entries)


def check_events(batch: np.ndarray[Any, Any], seqs: Any) -> None:
    """Every field of every record, against the sequence numbers expected in that order."""
    np.testing.assert_array_equal(batch["seq"], np.asarray(seqs, dtype=np.uint64))
    assert (batch["magic"] == MAGIC).all()
    assert (batch["tag"] == TAG).all()
    assert (batch["cpu"] < possible_cpus()).all()


# --- exactly what was written ---


@pytest.mark.parametrize("read", ["drain", "poll"])
def test_batch_reader_delivers_every_record_in_order(read: str) -> None:
    n = 10_000
    with events_object(ring_bytes=1 << 20, cfg_per_run=100) as obj, obj.ring_buffer("events") as rb:
        emit(obj, n // 100)
        batch = rb.drain() if read == "drain" else rb.poll(0)
        assert batch.dtype == rb.dtype
        assert len(batch) == n
        check_events(batch, range(n))
        assert rb.lost == 0
        assert rb.received == n
        assert rb.pending_bytes == 0
        assert len(rb.drain()) == 0


def test_record_reader_delivers_every_record_in_order() -> None:
    n = 5_000
    with events_object(ring_bytes=1 << 20, cfg_per_run=50) as obj, obj.ring_buffer("events") as rb:
        emit(obj, n // 50)
        records = list(rb.records(timeout_ms=0))
        assert len(records) == n
        cls = type(rb.record.to_python(np.zeros(1, dtype=rb.dtype)[0]))
        for seq, record in enumerate(records):
            assert type(record) is cls
            assert record == cls(seq=seq, cpu=record.cpu, magic=MAGIC, tag=TAG)
            assert isinstance(record.seq, int) and isinstance(record.tag, bytes)
            assert 0 <= record.cpu < possible_cpus()
        assert rb.lost == 0
        assert rb.received == n


def test_record_reader_builds_what_the_codec_builds() -> None:
    """records() makes dataclasses column by column; they must equal the codec's one by one."""
    with events_object(cfg_per_run=100) as obj, obj.ring_buffer("events") as rb:
        emit(obj, 3)
        batch = rb.drain()
        fast = list(ringbuf_module._record_maker(rb.record)(batch))
        assert fast == [rb.record.to_python(raw) for raw in batch]
        assert [hash(r) for r in fast] == [hash(rb.record.to_python(raw)) for raw in batch]


def test_record_reader_spans_polls() -> None:
    """records() goes on across polls while records keep coming, and stops at a quiet poll. The next run's
    records are made when the reader has the last of a batch, so they are there for its next poll, not raced
    against its timeout (test_poll_returns_when_a_record_arrives covers a poll woken by a record)."""
    with events_object(cfg_per_run=10) as obj, obj.ring_buffer("events") as rb:
        emit(obj, 1)
        seqs = []
        for record in rb.records(timeout_ms=300):
            seqs.append(record.seq)
            if record.seq in (9, 19):
                emit(obj, 1)
        assert seqs == list(range(30))


# --- loss, discards ---


def emit_on_cpu(obj: Object, cpu: int, runs: int) -> None:
    """emit() from a thread pinned to `cpu` (sched_setaffinity of pid 0 is the calling thread)."""

    def pinned() -> None:
        os.sched_setaffinity(0, {cpu})
        emit(obj, runs)

    thread = threading.Thread(target=pinned)
    thread.start()
    thread.join()


def test_overflow_counts_exactly_what_was_lost() -> None:
    """A 4 KiB ring takes (4096 - 1) // 32 = 127 records (the kernel refuses a reserve that would
    fill it completely); everything after them is lost, counted on the CPU that lost it."""
    n = 1000
    cpus = sorted(os.sched_getaffinity(0))
    with events_object(ring_bytes=4096, cfg_per_run=n) as obj, obj.ring_buffer("events") as rb:
        assert kernel_max_entries(obj.maps["events"].fd) == 4096
        emit_on_cpu(obj, cpus[0], 1)
        emit_on_cpu(obj, cpus[-1], 1)  # the ring is full: all of these are lost
        batch = rb.drain()
        fit = (4096 - 1) // EVENT_SLOT
        assert len(batch) == fit
        check_events(batch, range(fit))
        assert (batch["cpu"] == cpus[0]).all()
        assert rb.lost == 2 * n - fit
        # Space is free again once drained; loss is not counted twice.
        emit(obj, 1)
        batch = rb.drain()
        check_events(batch, range(2 * n, 2 * n + fit))
        assert rb.lost == 3 * n - 2 * fit
        assert rb.received == 2 * fit


def test_discarded_records_are_skipped_not_lost() -> None:
    n = 3000
    with events_object(ring_bytes=1 << 20, cfg_per_run=100, cfg_discard_every=3) as obj, \
            obj.ring_buffer("events") as rb:
        emit(obj, n // 100)
        expected = [seq for seq in range(n) if seq % 3]
        check_events(rb.drain(), expected)
        assert rb.lost == 0
        assert rb.pending_bytes == 0
        emit(obj, 1)
        assert [r.seq for r in rb.records(timeout_ms=0)] == [seq for seq in range(n, n + 100) if seq % 3]
        assert rb.received == len(expected) + 66


def test_a_ring_of_discarded_records_drains_empty() -> None:
    with events_object(cfg_per_run=50, cfg_discard_every=1) as obj, obj.ring_buffer("events") as rb:
        emit(obj, 2)
        assert rb.pending_bytes == 100 * EVENT_SLOT
        assert len(rb.drain()) == 0
        assert rb.pending_bytes == 0  # the consumer moved past them
        assert rb.lost == 0


# --- the ring's end ---


def test_wrap_around_delivers_every_record_once_in_order() -> None:
    """Hundreds of laps of a 4 KiB ring in rounds of 1..84 records (it holds 85): records start at
    every 16-byte offset, many straddle the end and are read through the second mapping."""
    ring = 4096
    with events_object(wide_bytes=ring) as obj, obj.ring_buffer("wide_events") as rb:
        assert kernel_max_entries(obj.maps["wide_events"].fd) == ring
        seqs: list[int] = []
        position = 0
        straddled = 0
        for i in range(400):
            count = (i * 37) % 84 + 1
            emit(obj, count, "emit_wide")
            if i % 2:
                batch = rb.drain()
                got = batch["seq"].tolist()
                np.testing.assert_array_equal(batch["check"], ~batch["seq"])
                assert (batch["fill"] == b"\x5a" * 24).all()
            else:
                records = list(rb.records(timeout_ms=0))
                got = [r.seq for r in records]
                assert all(r.check == ~r.seq & (2**64 - 1) and r.fill == b"\x5a" * 24 for r in records)
            assert len(got) == count
            seqs.extend(got)
            for _ in range(count):
                straddled += position % ring + WIDE_SLOT > ring
                position += WIDE_SLOT
        assert seqs == list(range(len(seqs)))
        assert position // ring > 100 and straddled > 100  # the premise: many laps, many straddles
        assert rb.lost == 0


# --- waiting ---


def test_poll_times_out_empty() -> None:
    with events_object() as obj, obj.ring_buffer("events") as rb:
        start = time.monotonic()
        assert len(rb.poll(0)) == 0
        assert time.monotonic() - start < 0.5
        start = time.monotonic()
        batch = rb.poll(300)
        elapsed = time.monotonic() - start
        assert len(batch) == 0
        assert 0.25 <= elapsed < 3


def test_poll_returns_when_a_record_arrives() -> None:
    with events_object() as obj, obj.ring_buffer("events") as rb:
        producer = threading.Timer(0.05, emit, (obj, 1))
        start = time.monotonic()
        producer.start()
        try:
            batch = rb.poll(10_000)
        finally:
            producer.join()
        elapsed = time.monotonic() - start
        check_events(batch, [0])
        assert 0.03 <= elapsed < 3  # woken by the record, long before the timeout


def test_next_batch_waits_for_a_wakeup_even_with_records_waiting() -> None:
    # Records submitted without a wakeup: poll() takes them at once, next_batch() leaves them to
    # the end of its wait, so a reader of a busy ring takes one big batch per wait, not many small.
    with events_object(cfg_no_wakeup=True) as obj, obj.ring_buffer("events") as rb:
        emit(obj, 5)
        start = time.monotonic()
        batch = rb.next_batch(300)
        assert time.monotonic() - start >= 0.25
        check_events(batch, range(5))
        emit(obj, 2)
        start = time.monotonic()
        check_events(rb.poll(5000), [5, 6])
        assert time.monotonic() - start < 2.5  # at once: nowhere near its timeout, however busy the machine
        emit(obj, 1)
        check_events(rb.next_batch(0), [7])  # 0: no wait


def test_next_batch_returns_at_a_wakeup() -> None:
    with events_object() as obj, obj.ring_buffer("events") as rb:
        producer = threading.Timer(0.05, emit, (obj, 3))
        start = time.monotonic()
        producer.start()
        try:
            batch = rb.next_batch(10_000)
        finally:
            producer.join()
        assert time.monotonic() - start < 3  # woken by the first record, long before the timeout
        if len(batch) < 3:  # the wakeup came with the first record; the others follow it
            batch = np.concatenate([batch, rb.next_batch(0)])
        check_events(batch, range(3))


def test_fileno_is_readable_while_records_wait() -> None:
    with events_object() as obj, obj.ring_buffer("events") as rb:
        assert select.select([rb], [], [], 0)[0] == []
        emit(obj, 1)
        assert select.select([rb], [], [], 0)[0] == [rb]
        rb.drain()
        assert select.select([rb], [], [], 0)[0] == []


# --- records the reader must stop at or refuse ---


def test_busy_record_stops_the_batch() -> None:
    """hold_reservation commits seq 0, reserves 1 and 2, commits 2, spins, then commits 1. A drain
    during the spin delivers 0 alone: it cannot pass the busy record, though 2 is committed; the
    next finds the busy record at the head and returns nothing."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs: the drain runs while the program spins, with preemption off, on another")
    with events_object() as obj, obj.ring_buffer("events") as rb:
        state = obj.maps["hold_state"]
        for _attempt in range(5):
            state[0] = 0
            runner = threading.Thread(target=emit, args=(obj, 1, "hold_reservation"))
            runner.start()
            try:
                deadline = time.monotonic() + 10
                while state[0] == 0 and time.monotonic() < deadline:
                    pass
                during = rb.drain()
                again = rb.drain()  # the busy record now at the head: nothing, and no error
                still_busy = state[0] == 1  # read after the drains: seq 1 was busy throughout them
                pending = rb.pending_bytes
            finally:
                runner.join()
            after = rb.drain()
            if still_busy:
                break
            assert [*during["seq"], *again["seq"], *after["seq"]] == [0, 1, 2]  # too slow; try again
        else:
            pytest.fail("the drain never ran while the record was busy; raise cfg_spin_loops")
        check_events(during, [0])
        assert len(again) == 0
        assert pending == 2 * EVENT_SLOT
        check_events(after, [1, 2])
        assert rb.lost == 0


def test_record_of_another_size_raises_after_the_ones_before_it() -> None:
    """emit_short puts an 8-byte record in a ring of 24-byte ones: the reader delivers what came
    before it, then raises TypeMismatchError once and steps past it."""
    with events_object() as obj, obj.ring_buffer("events") as rb:
        emit(obj, 2)
        emit(obj, 1, "emit_short")
        emit(obj, 2)
        check_events(rb.drain(), [0, 1])
        with pytest.raises(TypeMismatchError, match="8-byte record"):
            rb.drain()
        check_events(rb.drain(), [3, 4])
        assert rb.received == 4

        emit(obj, 1, "emit_short")
        emit(obj, 1)
        got = []
        with pytest.raises(TypeMismatchError):
            for record in rb.records(timeout_ms=0):
                got.append(record.seq)
        assert got == []
        assert [r.seq for r in rb.records(timeout_ms=0)] == [6]


# --- lifetime ---


def test_close_is_safe_twice_and_reading_after_it_fails() -> None:
    with events_object() as obj:
        rb = obj.ring_buffer("events")
        rb.close()
        rb.close()
        with pytest.raises(BpfscopeError, match="closed"):
            rb.drain()


def test_a_map_that_is_no_ring_buffer_is_refused() -> None:
    with events_object() as obj:
        with pytest.raises(BpfscopeError, match="no ring buffer map 'next_seq'"):
            obj.ring_buffer("next_seq")


def test_a_ring_buffer_is_made_from_its_map_record_type_and_lost_counter() -> None:
    """No Object needed: the map, the record type and the counter, as cilium's ringbuf.NewReader(map)."""
    with events_object(ring_bytes=4096, cfg_per_run=200) as obj:
        with RingBuffer(obj.maps["events"], record=obj.btf.struct("test_event"), lost=obj.maps["events_lost"]) as rb:
            emit(obj, 1)
            check_events(rb.drain(), range(127))
            assert rb.lost == 200 - 127 and rb.name == "events"
        with RingBuffer(obj.maps["events"]) as rb:  # no record type: bytes, as the kernel wrote them
            emit(obj, 1)
            batch = rb.drain()
            assert len(batch) == 127 and all(len(sample) == 24 for sample in batch)
            assert rb.lost == 0  # no counter given
        with pytest.raises(BpfscopeError, match="'next_seq' is not a ring buffer"):
            RingBuffer(obj.maps["next_seq"])
        with pytest.raises(TypeMismatchError, match="cannot be in a 4096-byte ring"):
            RingBuffer(obj.maps["events"], record=np.dtype("V4096"))


def test_a_plain_libbpf_ring_reads_by_naming_its_struct() -> None:
    with load(PLAIN) as obj:
        with pytest.raises(BpfscopeError, match='no record type exported.*record="event"'):
            obj.ring_buffer("events")
        with obj.ring_buffer("events", record="event") as rb:
            emit(obj, 3, "emit_event")
            batch = rb.drain()
            assert batch["pid"].tolist() == [4242] * 3 and (batch["comm"] == b"plain").all()
            assert (batch["seq"] >= 1).all()  # counted per CPU, in the scratch map
            emit(obj, 1, "emit_event")
            (event,) = rb.records(timeout_ms=0)
            assert (event.pid, event.comm) == (4242, b"plain")
            assert rb.lost == 0 and rb.received == 4


def test_a_record_type_not_in_the_btf_reads_with_a_numpy_dtype() -> None:
    with load(PLAIN) as obj:
        with pytest.raises(TypeMismatchError, match="'pair'"):
            obj.ring_buffer("pairs", record="pair")
        with obj.ring_buffer("pairs", record=np.dtype([("left", "u8"), ("right", "u8")])) as rb:
            emit(obj, 2, "emit_pair")
            assert rb.drain().tolist() == [(1, 2**64 - 2)] * 2
            emit(obj, 1, "emit_pair")
            (pair,) = rb.records(timeout_ms=0)
            assert (int(pair["left"]), int(pair["right"])) == (1, 2**64 - 2)


def test_records_of_any_size_read_as_bytes() -> None:
    text = b"0123456789abcdefghijklmnopqrstu\0"
    samples = [text[:size] for size in (1, 5, 8, 13, 32)]
    with load(PLAIN) as obj, obj.ring_buffer("samples", record=bytes) as rb:
        emit(obj, 2, "emit_samples")
        batch = rb.drain()
        assert batch.dtype == object and list(batch) == samples * 2
        emit(obj, 1, "emit_samples")
        assert list(rb.records(timeout_ms=0)) == samples
        assert rb.received == 15 and rb.pending_bytes == 0 and rb.lost == 0


# --- the benchmark ---


def test_bench_ringbuf_runs() -> None:
    from bpfscope.benchmarks import ringbuf as bench

    figures = bench.run(events=20_000, rounds=1, load_seconds=0.3)
    assert len(figures) >= 4
    for figure in figures:
        assert figure.benchmark == "ringbuf"
        assert figure.name and figure.unit
        assert figure.value > 0, figure
    names = [f.name for f in figures]
    assert len(set(names)) == len(names)
    assert not os.path.exists(f"/sys/fs/bpf/bpfscope/bench-{os.getpid()}")  # the pin is gone
