"""Perf event buffers (BPF_MAP_TYPE_PERF_EVENT_ARRAY) on the real kernel: a tracepoint program's
samples counted exactly, samples the kernel dropped counted as lost (lost + received is what the
program sent), rings that wrap, samples of another size, records of any size, and the epoll wakeups.
Most scenarios run the XDP programs of perfbuf_events through BPF_PROG_TEST_RUN, on the CPU the test
runs on."""

from __future__ import annotations

import ctypes
import errno
import os
import select
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bpfscope import _libbpf
from bpfscope.btf import TypeCodec
from bpfscope.errors import BpfscopeError, TypeMismatchError
from bpfscope.object import Object, ObjectSpec
from bpfscope.perfbuf import PerfBuffer

PACKET = bytes(64)
MAGIC = 0xB0F5C0DE


def open_object(test_object: Any, **rodata: int) -> Object:
    spec = ObjectSpec.open(test_object("perfbuf_events"))
    spec.rodata["cfg_tgid"] = os.getpid()
    for name, value in rodata.items():
        spec.rodata[name] = value
    return spec.load()


@pytest.fixture
def obj(test_object: Any) -> Iterator[Object]:
    with open_object(test_object) as loaded:
        yield loaded


@pytest.fixture
def one_cpu() -> Iterator[int]:
    """Runs the test on one CPU, so that every sample goes to that CPU's ring."""
    allowed = os.sched_getaffinity(0)
    cpu = min(allowed)
    os.sched_setaffinity(0, {cpu})
    yield cpu
    os.sched_setaffinity(0, allowed)


def emit(obj: Object, program: str = "emit_samples", times: int = 1) -> None:
    obj.programs[program].test_run(PACKET, repeat=times)


def drain_all(buffer: PerfBuffer, timeout_ms: int = 50) -> list[Any]:
    batches = []
    while True:
        batch = buffer.poll(timeout_ms)
        if not len(batch):
            return batches
        batches.append(batch)


def test_a_tracepoint_program_delivers_exactly_what_it_sent(obj: Object) -> None:
    calls = 2000
    with obj.perf_buffer("getpids", record="getpid_sample", pages=64) as samples, \
            obj.programs["trace_getpid"].attach_tracepoint("syscalls", "sys_enter_getpid"):
        for _ in range(calls):
            os.getpid()
        seqs = sorted(seq for batch in drain_all(samples) for seq in batch["seq"].tolist())
    assert seqs == list(range(1, calls + 1))
    assert (samples.received, samples.lost) == (calls, 0)


def test_samples_dropped_by_a_full_ring_are_counted_as_lost(obj: Object, one_cpu: int) -> None:
    calls = 5000
    with obj.perf_buffer("getpids", record="getpid_sample", pages=1) as samples, \
            obj.programs["trace_getpid"].attach_tracepoint("syscalls", "sys_enter_getpid"):
        for _ in range(calls):
            os.getpid()
        first = samples.drain()
        assert 0 < len(first) < calls
        # The kernel reports a ring's lost samples just before the next sample it writes there.
        assert samples.lost == 0
        os.getpid()
        last = samples.drain()
    assert len(last) == 1 and int(last["seq"][0]) == calls + 1
    assert samples.lost > 0
    assert samples.lost + samples.received == calls + 1
    assert samples.lost_per_cpu[one_cpu] == samples.lost


def test_batches_hold_every_sample_in_order(obj: Object, one_cpu: int) -> None:
    with obj.perf_buffer("samples") as samples:  # struct test_sample, exported with BTF_EXPORT
        emit(obj, times=500)
        batch = samples.drain()
    assert batch.dtype == obj.exported_type("samples").dtype
    assert batch["seq"].tolist() == list(range(500))
    assert (batch["check"] == ~batch["seq"]).all()
    assert (batch["magic"] == MAGIC).all() and (batch["cpu"] == one_cpu).all()


def test_a_ring_that_wraps_many_times_delivers_every_sample_once(test_object: Any, one_cpu: int) -> None:
    # 40-byte samples do not divide a 4 KiB ring: many straddle its end and are read in two pieces.
    with open_object(test_object, cfg_per_run=50) as obj, obj.perf_buffer("samples", pages=1) as samples:
        seqs: list[int] = []
        for _ in range(40):
            emit(obj)
            seqs += samples.drain()["seq"].tolist()
    assert seqs == list(range(2000))
    assert samples.lost == 0


def test_records_come_one_at_a_time_as_the_codec_makes_them(obj: Object) -> None:
    with obj.perf_buffer("samples") as samples:
        emit(obj, times=300)
        records = list(samples.records(timeout_ms=20))
    codec = samples.record
    assert isinstance(codec, TypeCodec)
    assert [record.seq for record in records] == list(range(300))
    assert type(records[7]) is codec.python_type
    assert records[7] == codec.python_type(seq=7, check=~7 & (1 << 64) - 1, cpu=records[7].cpu, magic=MAGIC)


def test_a_sample_of_another_size_raises_after_the_ones_before_it(obj: Object, one_cpu: int) -> None:
    with obj.perf_buffer("samples") as samples:
        emit(obj, times=3)
        emit(obj, "emit_short")
        emit(obj, times=2)
        batch = samples.drain()
        assert batch["seq"].tolist() == [0, 1, 2, 3, 4]
        with pytest.raises(TypeMismatchError, match="12 bytes.*struct test_sample"):
            samples.drain()
        emit(obj, "emit_short")
        with pytest.raises(TypeMismatchError):  # nothing else came: at once
            samples.drain()
        emit(obj)
        assert samples.drain()["seq"].tolist() == [5]


def test_samples_of_any_size_read_as_bytes(obj: Object) -> None:
    with obj.perf_buffer("sizes", record=bytes) as sizes:
        emit(obj, "emit_sizes")
        batch = sizes.drain()
    text = b"0123456789abcdefghijklmnopqrstu\0"
    assert [sample[:n] for sample, n in zip(batch, (1, 5, 8, 13, 32))] == [text[:n] for n in (1, 5, 8, 13, 32)]
    assert [len(sample) for sample in batch] == [4, 12, 12, 20, 36]  # the kernel's padding


def test_a_struct_named_at_the_reader_or_a_dtype_reads_a_plain_libbpf_buffer(obj: Object) -> None:
    with obj.perf_buffer("samples", record=obj.exported_type("samples").dtype) as samples:
        emit(obj, times=2)
        assert samples.drain()["seq"].tolist() == [0, 1]
    with pytest.raises(BpfscopeError, match='perf buffer .getpids. has no record type.*record="event"'):
        obj.perf_buffer("getpids")


def test_poll_times_out_empty_and_wakes_when_a_sample_arrives(obj: Object) -> None:
    with obj.perf_buffer("samples") as samples:
        started = time.monotonic()
        assert len(samples.poll(timeout_ms=50)) == 0
        assert time.monotonic() - started >= 0.04
        timer = threading.Timer(0.05, emit, args=(obj,))
        timer.start()
        started = time.monotonic()
        batch = samples.poll(timeout_ms=5000)
        timer.join()
    assert len(batch) == 1
    assert time.monotonic() - started < 2.5


def test_wakeups_come_every_so_many_samples(obj: Object, one_cpu: int) -> None:
    with obj.perf_buffer("samples", wakeup_events=10) as samples:
        emit(obj, times=5)
        assert not select.select([samples], [], [], 0.05)[0]  # five samples wake nobody
        emit(obj, times=5)
        assert select.select([samples], [], [], 1)[0]  # the tenth does
        assert len(samples.next_batch(timeout_ms=0)) == 10


def test_close_empties_the_slots_and_is_safe_twice(obj: Object) -> None:
    samples = obj.perf_buffer("samples")
    samples.close()
    samples.close()
    for cpu in samples.cpus:  # the kernel reads no slot back to user space: deleting one tells if it is full
        assert _libbpf.bpf_map_delete_elem(obj.maps["samples"].fd, ctypes.byref(ctypes.c_uint32(cpu))) == -errno.ENOENT
    with pytest.raises(BpfscopeError, match="closed"):
        samples.drain()


def test_a_map_that_is_no_perf_event_array_is_refused(test_object: Any) -> None:
    with ObjectSpec.open(test_object("map_types")).load() as other:
        with pytest.raises(BpfscopeError, match="not a perf event array"):
            PerfBuffer(other.maps["slots"])
        with pytest.raises(BpfscopeError, match="no perf event array map 'slots'"):
            other.perf_buffer("slots")
