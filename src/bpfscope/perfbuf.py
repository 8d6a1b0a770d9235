"""Perf event buffer reader: per-CPU perf rings drained straight into a numpy array.

A program that calls bpf_perf_event_output writes into a BPF_MAP_TYPE_PERF_EVENT_ARRAY map, whose
slot for each CPU holds a perf event (PERF_COUNT_SW_BPF_OUTPUT) that the reader opened and mapped: a
header page (struct perf_event_mmap_page: data_head, written by the kernel, and data_tail, by us) and
a data area of a power of two pages. This is how programs send events on kernels before 5.8, which
have no BPF ring buffer, and how many programs are still written.

Each ring holds perf records (struct perf_event_header: type, misc, size; 8-byte aligned):
PERF_RECORD_SAMPLE with a u32 size and the raw bytes the program wrote, padded so that the size word
and the bytes end on 8 bytes (the size counts the padding); and PERF_RECORD_LOST with the number of
samples the kernel dropped on that CPU while the ring was full. The kernel writes that count only
once there is room again, just before the next sample. The data area is mapped once, not twice as the
BPF ring buffer's is, so a record can wrap around its end: the bytes between the two positions are
read as one stretch (a copy where they wrap) before they are parsed.

Samples of one record type all have the same size, so a batch is a strided view, checked and copied
in a few numpy operations (`parse_fixed`); records of any size (`bytes`) are walked header by header
(`parse_variable`). Both are pure functions of the data area and the two positions, tested on
synthetic rings. A drain reads every CPU's ring once and publishes each ring's tail at its head:
every record before data_head is complete.

The reader opens one epoll fd over the CPUs' perf events; the kernel wakes it after `wakeup_events`
samples on a CPU (1 by default: every sample, as libbpf does), or after `watermark` bytes.

Records come in order per CPU; across CPUs a batch holds one CPU's records after another's. Memory
ordering is ringbuf's: on x86 the loads and stores are already ordered, elsewhere `_Fence` is the
barrier after reading data_head and before writing data_tail."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import itertools
import mmap
import os
import select
import struct
from types import TracebackType
from typing import Any, Iterable, Iterator, NamedTuple, Optional

import numpy as np

from . import _libbpf
from ._uapi import (
    NR_PERF_EVENT_OPEN,
    PERF_ATTR_SIZE_VER0,
    PERF_ATTR_WATERMARK,
    PERF_EVENT_IOC_ENABLE,
    PERF_FLAG_FD_CLOEXEC,
    PERF_MMAP_DATA_HEAD,
    PERF_MMAP_DATA_OFFSET,
    PERF_MMAP_DATA_SIZE,
    PERF_MMAP_DATA_TAIL,
    PERF_RECORD_LOST,
    PERF_RECORD_SAMPLE,
    PERF_SAMPLE_RAW,
    PERF_TYPE_SOFTWARE,
    SoftwareEvent,
)
from .btf import TypeCodec
from .errors import BpfscopeError, SyscallError, TypeMismatchError
from .maps import Map, MapType
from .program import online_cpus
from .ringbuf import _CHUNK, DataArea, Record, _Fence, record_decoding

__all__ = ["PerfBuffer", "PerfParsed", "parse_fixed", "parse_variable", "sample_size"]

_HEADER = struct.Struct("=IHH")  # struct perf_event_header: type, misc, size
_SAMPLE_HEAD = _HEADER.size + 4  # the header and the raw data's u32 size
_LOST = struct.Struct("=QQ")  # PERF_RECORD_LOST after its header: id, lost
_RAW_SIZE = struct.Struct("=I")


class PerfParsed(NamedTuple):
    """What one pass over a CPU's ring found between its tail and head."""

    records: np.ndarray[Any, Any]  # parse_fixed: (n, size) uint8 rows; parse_variable: n `bytes`
    tail: int  # the position to publish: past every record read
    lost: int  # samples the kernel dropped (its PERF_RECORD_LOST counts)
    foreign: tuple[int, ...] = ()  # raw sizes of samples of another size, stepped past


def sample_size(size: int) -> int:
    """Bytes a sample of `size` raw bytes takes in a perf ring: the header, the u32 size and the
    bytes, padded to 8 as the kernel pads them."""
    return _HEADER.size + ((size + 4 + 7) & ~7)


def _bytes_of(data: DataArea) -> np.ndarray[Any, Any]:
    return data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)


def _pending(data: np.ndarray[Any, Any], tail: int, head: int) -> np.ndarray[Any, Any]:
    """The bytes between tail and head as one array: a view where they are in one piece, a copy of
    the two pieces where they wrap around the end of the data area."""
    start = tail & (len(data) - 1)
    end = start + (head - tail)
    if end <= len(data):
        return data[start:end]
    return np.concatenate([data[start:], data[: end - len(data)]])


def _headers(stride: int) -> np.dtype[Any]:
    """A sample's header and raw size, as a dtype whose items are `stride` bytes apart."""
    return np.dtype({"names": ["type", "size", "raw_size"], "formats": ["=u4", "=u2", "=u4"],
                     "offsets": [0, 6, 8], "itemsize": stride})


def parse_fixed(data: DataArea, tail: int, head: int, *, size: int) -> PerfParsed:
    """The samples of `size` bytes between positions `tail` and `head` of a perf ring whose data area
    (uint8, a power of two bytes, mapped once) is `data`, as (n, size) rows; lost counts added up;
    samples of another raw size stepped past and listed in `foreign`; other records skipped. The
    kernel moves data_head past whole records only; a record that `head` cuts (never from the
    kernel) is left for the next pass, and bytes that are no record end the pass at `head`."""
    region = _pending(_bytes_of(data), tail, head)
    stride = sample_size(size)
    headers = _headers(stride)
    raw_size = stride - _SAMPLE_HEAD
    parts: list[np.ndarray[Any, Any]] = []
    lost = 0
    foreign: list[int] = []
    pos, end = 0, len(region)
    while pos < end:
        count = (end - pos) // stride
        if count:
            rows = region[pos : pos + count * stride]
            fields = rows.view(headers)
            ours = (fields["type"] == PERF_RECORD_SAMPLE) & (fields["size"] == stride)
            ours &= fields["raw_size"] == raw_size
            ready = count if ours.all() else int(np.argmin(ours))
            if ready:
                samples = rows[: ready * stride].reshape(ready, stride)
                parts.append(samples[:, _SAMPLE_HEAD : _SAMPLE_HEAD + size].copy())
                pos += ready * stride
        if pos >= end:
            break
        record_type, _misc, record_size = _HEADER.unpack_from(region.data, pos)
        if record_size < _HEADER.size:
            break  # not a record: nothing after it can be read
        if pos + record_size > end:
            return PerfParsed(_joined(parts, size), tail + pos, lost, tuple(foreign))  # the rest is not there yet
        if record_type == PERF_RECORD_LOST:
            lost += _LOST.unpack_from(region.data, pos + _HEADER.size)[1]
        elif record_type == PERF_RECORD_SAMPLE:
            foreign.append(_RAW_SIZE.unpack_from(region.data, pos + _HEADER.size)[0])
        pos += record_size
    return PerfParsed(_joined(parts, size), head, lost, tuple(foreign))


def _joined(parts: list[np.ndarray[Any, Any]], size: int) -> np.ndarray[Any, Any]:
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.empty((0, size), dtype=np.uint8)


def parse_variable(data: DataArea, tail: int, head: int) -> PerfParsed:
    """The samples between `tail` and `head`, each as the `bytes` the kernel keeps (the raw data with
    its padding: up to 7 bytes more than the program wrote), and the lost counts added up."""
    region = _pending(_bytes_of(data), tail, head)
    raw = region.data
    samples: list[bytes] = []
    lost = 0
    pos, end = 0, len(region)
    while pos < end:
        record_type, _misc, record_size = _HEADER.unpack_from(raw, pos)
        if record_size < _HEADER.size:
            break
        if pos + record_size > end:
            head = tail + pos  # the rest is not there yet
            break
        if record_type == PERF_RECORD_SAMPLE:
            (length,) = _RAW_SIZE.unpack_from(raw, pos + _HEADER.size)
            samples.append(raw[pos + _SAMPLE_HEAD : pos + _SAMPLE_HEAD + length].tobytes())
        elif record_type == PERF_RECORD_LOST:
            lost += _LOST.unpack_from(raw, pos + _HEADER.size)[1]
        pos += record_size
    records = np.empty(len(samples), dtype=object)
    records[:] = samples
    return PerfParsed(records, head, lost)


class _CpuRing:
    """One CPU's perf event: its fd, its mapping and numpy views of the positions and the data area."""

    def __init__(self, cpu: int, fd: int, pages: int) -> None:
        self.cpu = cpu
        self.fd = fd
        page = mmap.PAGESIZE
        try:
            # Writable: the kernel then keeps what we have not read (it counts a sample as lost instead).
            self.memory = mmap.mmap(fd, (1 + pages) * page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as exc:  # EPERM: over perf_event_mlock_kb without CAP_IPC_LOCK
            raise SyscallError(exc.errno or errno.EINVAL, f"map cpu {cpu}'s perf ring of {pages} pages") from None
        self.head = np.frombuffer(self.memory, dtype=np.uint64, count=1, offset=PERF_MMAP_DATA_HEAD)
        self.tail = np.frombuffer(self.memory, dtype=np.uint64, count=1, offset=PERF_MMAP_DATA_TAIL)
        (offset,) = struct.unpack_from("=Q", self.memory, PERF_MMAP_DATA_OFFSET)
        (size,) = struct.unpack_from("=Q", self.memory, PERF_MMAP_DATA_SIZE)
        if not size:  # before Linux 4.1: the data area follows the header page
            offset, size = page, pages * page
        self.data = np.frombuffer(self.memory, dtype=np.uint8, count=size, offset=offset)

    def close(self) -> None:
        del self.head, self.tail, self.data  # views hold the mapping's buffer
        try:
            self.memory.close()
        except BufferError:
            pass  # a view is still alive somewhere (a traceback's frame): unmapped when it dies
        os.close(self.fd)


def _open_output_event(cpu: int, wakeup_events: int, watermark: int) -> int:
    """A PERF_COUNT_SW_BPF_OUTPUT event on `cpu` that samples its raw data, for bpf_perf_event_output."""
    flags = PERF_ATTR_WATERMARK if watermark else 0
    # struct perf_event_attr up to config1: type, size, config, sample_period, sample_type, read_format,
    # the flag bits, wakeup_events (or wakeup_watermark), bp_type, config1.
    attr = struct.pack("=IIQQQQQIIQ", PERF_TYPE_SOFTWARE, PERF_ATTR_SIZE_VER0, SoftwareEvent.BPF_OUTPUT, 1,
                       PERF_SAMPLE_RAW, 0, flags, watermark or wakeup_events, 0, 0)
    fd = int(_libbpf._syscall(NR_PERF_EVENT_OPEN, attr, -1, cpu, -1, PERF_FLAG_FD_CLOEXEC))
    if fd < 0:
        raise _libbpf.error(ctypes.get_errno(), f"perf_event_open bpf-output on cpu {cpu}", "CAP_PERFMON")
    return fd


class PerfBuffer:
    """Reads perf event array `events` (BPF_MAP_TYPE_PERF_EVENT_ARRAY), the way RingBuffer reads a
    ring buffer: `poll()`, `drain()` and `next_batch()` return a batch, a numpy array of the record
    type (of `bytes` objects for `bytes`), possibly empty; `records()` and iteration yield one record
    at a time from the same batches. `record` is a BTF struct (`obj.btf.struct("event")`), a numpy
    dtype, or `bytes` for samples of any size (each with the kernel's padding to 8 bytes, less 4).

    Each CPU gets a ring of `pages` pages (a power of two). The kernel wakes the reader after
    `wakeup_events` samples on one CPU, or, if `watermark` is set, once a CPU's ring holds that many
    bytes. `lost` counts the samples the kernel dropped because a ring was full (`lost_per_cpu` by
    CPU): the kernel reports them just before the next sample it writes on that CPU. `received` is
    what this reader has delivered. `cpus` (by default every online CPU the map has a slot for) are
    the CPUs whose samples are read; the slots of the others stay empty and their samples fail.
    Samples reach the reader only while it is open: the kernel drops what a program sends before."""

    def __init__(
        self,
        events: Map,
        *,
        record: Record = bytes,
        pages: int = 8,
        wakeup_events: int = 1,
        watermark: int = 0,
        cpus: Optional[Iterable[int]] = None,
    ) -> None:
        if events.type != MapType.PERF_EVENT_ARRAY:
            raise BpfscopeError(errno.EINVAL,
                                f"map {events.name!r} is not a perf event array (BPF_MAP_TYPE_PERF_EVENT_ARRAY)")
        if pages < 1 or pages & (pages - 1):
            raise BpfscopeError(errno.EINVAL, f"perf buffer {events.name!r}: pages is a power of two, not {pages}")
        self.name = events.name
        self.record = record
        self.dtype, self._make_records = record_decoding(record, f"perf buffer {self.name!r}")
        self._size = 0 if record is bytes else self.dtype.itemsize  # 0: samples of any size
        if record is not bytes and not 0 < sample_size(self._size) <= pages * mmap.PAGESIZE:
            raise TypeMismatchError(f"perf buffer {self.name!r}: a {self._size}-byte record cannot be in a "
                                    f"{pages}-page ring")
        self._events = events
        self._fence = _Fence()
        self.received = 0
        self.lost_per_cpu: dict[int, int] = {}
        self._mismatch: Optional[TypeMismatchError] = None
        self._rings: list[_CpuRing] = []
        self._epoll: Optional[select.epoll] = select.epoll()
        chosen = sorted(set(cpu for cpu in online_cpus() if cpu < events.max_entries) if cpus is None else cpus)
        try:
            for cpu in chosen:
                if cpu >= events.max_entries:
                    raise BpfscopeError(errno.E2BIG, f"perf buffer {self.name!r} has {events.max_entries} slots, "
                                        f"no slot for cpu {cpu}")
                self._open(cpu, pages, wakeup_events, watermark)
        except BaseException:
            self.close()
            raise
        self.cpus = tuple(chosen)

    def _open(self, cpu: int, pages: int, wakeup_events: int, watermark: int) -> None:
        fd = _open_output_event(cpu, wakeup_events, watermark)
        try:
            ring = _CpuRing(cpu, fd, pages)
        except BaseException:
            os.close(fd)
            raise
        self._rings.append(ring)
        self.lost_per_cpu[cpu] = 0
        fcntl.ioctl(fd, PERF_EVENT_IOC_ENABLE, 0)
        key, value = ctypes.c_uint32(cpu), ctypes.c_uint32(fd)
        _libbpf.check(_libbpf.bpf_map_update_elem(self._events.fd, ctypes.byref(key), ctypes.byref(value), 0),
                      f"put cpu {cpu}'s perf event into map {self.name!r}")
        assert self._epoll is not None
        self._epoll.register(fd, select.EPOLLIN)

    def fileno(self) -> int:
        """An epoll fd over every CPU's ring: readable after a wakeup (for a caller's own select loop)."""
        if self._epoll is None:
            raise BpfscopeError(errno.EBADF, f"perf buffer {self.name!r} is closed")
        return self._epoll.fileno()

    @property
    def lost(self) -> int:
        """Samples the kernel dropped because a ring was full, over all CPUs, as reported so far."""
        return sum(self.lost_per_cpu.values())

    def drain(self) -> np.ndarray[Any, Any]:
        """Every sample now in the rings, CPU by CPU, as one array; never waits. A sample of another
        size than the record type is stepped past and raises TypeMismatchError: at once if it is all
        there was, else at the next call, after the samples that came with it are delivered."""
        if self._epoll is None:
            raise BpfscopeError(errno.EBADF, f"perf buffer {self.name!r} is closed")
        mismatch, self._mismatch = self._mismatch, None
        if mismatch is not None:
            raise mismatch
        parts: list[np.ndarray[Any, Any]] = []
        foreign: list[int] = []
        for ring in self._rings:
            head = int(ring.head[0])
            tail = int(ring.tail[0])
            if head == tail:
                continue
            self._fence()
            if self._size:
                parsed = parse_fixed(ring.data, tail, head, size=self._size)
            else:
                parsed = parse_variable(ring.data, tail, head)
            self._fence()
            ring.tail[0] = parsed.tail
            self.lost_per_cpu[ring.cpu] += parsed.lost
            foreign += parsed.foreign
            if len(parsed.records):
                parts.append(parsed.records)
        records = np.concatenate(parts) if len(parts) > 1 else parts[0] if parts else None
        if records is None:
            batch = np.empty(0, dtype=self.dtype)
        else:
            batch = records.view(self.dtype).reshape(-1) if self._size else records
        if foreign:
            error = TypeMismatchError(
                f"perf buffer {self.name!r}: {len(foreign)} sample(s) of {', '.join(map(str, sorted(set(foreign))))} "
                f"bytes (padding included) where {self._record_name()} ({self._size} bytes) was expected; skipped them")
            if not len(batch):
                raise error
            self._mismatch = error
        self.received += len(batch)
        return batch

    def _record_name(self) -> str:
        return self.record.name if isinstance(self.record, TypeCodec) else "the record dtype"

    def poll(self, timeout_ms: int = 100) -> np.ndarray[Any, Any]:
        """A batch of samples: what is there now, or what arrives within `timeout_ms` (-1: wait for
        ever); empty if none came."""
        batch = self.drain()
        if len(batch) or timeout_ms == 0:
            return batch
        assert self._epoll is not None
        # A sample written after drain() read the head raises a wakeup that this wait sees.
        self._epoll.poll(timeout_ms / 1000 if timeout_ms >= 0 else -1)
        return self.drain()

    def next_batch(self, timeout_ms: int = 100) -> np.ndarray[Any, Any]:
        """The samples up to the kernel's next wakeup: waits until one comes or `timeout_ms` passes (0:
        not at all), then drains. With `watermark` or `wakeup_events` above 1, this gives batches of
        that size at a high rate and one batch per `timeout_ms` at a low one."""
        if self._epoll is None:
            raise BpfscopeError(errno.EBADF, f"perf buffer {self.name!r} is closed")
        if timeout_ms:
            self._epoll.poll(timeout_ms / 1000 if timeout_ms > 0 else -1)
        return self.drain()

    def records(self, timeout_ms: int = 100) -> Iterator[Any]:
        """One record at a time (a frozen dataclass for a BTF struct), drawn from poll()'s batches;
        stops at a poll that returns nothing within `timeout_ms`."""
        return itertools.chain.from_iterable(self._record_chunks(timeout_ms))

    def _record_chunks(self, timeout_ms: int) -> Iterator[Iterable[Any]]:
        make = self._make_records
        while True:
            batch = self.poll(timeout_ms)
            if not len(batch):
                return
            for start in range(0, len(batch), _CHUNK):
                yield make(batch[start : start + _CHUNK])

    def close(self) -> None:
        """Empties the map's slots, unmaps the rings and closes the perf events; the map itself belongs
        to the object. Safe to call twice."""
        epoll, self._epoll = self._epoll, None
        if epoll is None:
            return
        epoll.close()
        rings, self._rings = self._rings, []
        try:
            events_fd = self._events.fd
        except BpfscopeError:  # a closed object took its map's slots with it
            events_fd = -1
        for ring in rings:
            if events_fd >= 0:
                _libbpf.bpf_map_delete_elem(events_fd, ctypes.byref(ctypes.c_uint32(ring.cpu)))
            ring.close()

    def __enter__(self) -> PerfBuffer:
        return self

    def __exit__(
        self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[Any]:
        return self.records()
