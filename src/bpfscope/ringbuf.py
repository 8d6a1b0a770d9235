"""Ring buffer reader: the mmap'd ring drained straight into a numpy array.

The kernel's BPF ring buffer (BPF_MAP_TYPE_RINGBUF) is a consumer page (writable by us), a
producer page, and the data area mapped twice back to back, so a record that wraps past the end
still reads contiguously. Each record has an 8-byte header: its length with the BUSY (reserved,
not yet committed) and DISCARD bits, then a page offset. Records are 8-byte aligned.

A reader is made from the ring map and the record type, as cilium's `ringbuf.NewReader(*ebpf.Map)`
leaves decoding to its caller: a BTF struct (DEFINE_RINGBUF exports one, `Object.ring_buffer` finds
it), a numpy dtype, or `bytes` for records of any size.

Records of one type all have the same size, so a batch is a strided view over the ring: numpy
checks every header and copies every record in a few C loops, with no Python per event
(`parse_fixed`). What a drain does with each record, in ring order:

- committed, of the record type's size: delivered;
- discarded (bpf_ringbuf_discard): skipped; not delivered, not counted as lost;
- busy: the batch stops there, even if later records are committed (the kernel hands out
  space in order, and the consumer position cannot pass a record still being written);
- committed with another size (bpf_ringbuf_output of some other struct): an error in the
  BPF program. The records before it are delivered; the drain that finds it at the head
  of the ring steps past it and raises TypeMismatchError, so a caller that catches the
  error reads on from the next record.

Records of any size (`bytes`) are walked header by header (`parse_variable`), one Python step each.
The parsers are pure functions of the data area and the two positions, tested on synthetic rings.

After publishing its consumer position a drain reads the producer position again and goes on
once if records came meanwhile, as libbpf does (libbpf goes on until none came): a record
committed before that store saw the old position and woke nobody, so poll() only sleeps after a
drain that found the ring empty. Records that come during that second pass are the next drain's.

Memory ordering: libbpf reads the producer position and each header with acquire loads and
publishes the consumer position with a release store. numpy does plain loads and stores; on
x86 (TSO) those already keep that order. Elsewhere `_Fence` puts a barrier after the producer
position, between the headers and the records, and before the consumer position store."""

from __future__ import annotations

import dataclasses
import errno
import itertools
import mmap
import platform
import select
import struct
import threading
from types import TracebackType
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Optional, Union

import numpy as np

from ._uapi import BPF_RINGBUF_BUSY_BIT, BPF_RINGBUF_DISCARD_BIT, BPF_RINGBUF_HDR_SZ
from .btf import Kind, TypeCodec
from .errors import BpfscopeError, TypeMismatchError
from .maps import Map, MapType

__all__ = ["Parsed", "Record", "RingBuffer", "parse_fixed", "parse_variable"]

# What a reader's records are: a BTF type, a numpy dtype, or `bytes` (records of any size).
Record = Union[TypeCodec, np.dtype[Any], type[bytes]]
DataArea = Union[np.ndarray[Any, Any], bytes, bytearray, memoryview]
Decoder = Callable[[np.ndarray[Any, Any]], Iterable[Any]]  # a batch into single records

_BUSY = BPF_RINGBUF_BUSY_BIT
_DISCARD = BPF_RINGBUF_DISCARD_BIT
_SIZE = _DISCARD - 1
_HEADER = BPF_RINGBUF_HDR_SZ
_LENGTH = struct.Struct("=I")  # a header's first word: the length and the two bits
_CHUNK = 1024  # records made into Python objects at a time: small enough to stay in cache


def _no_fence() -> None:
    pass


class Parsed(NamedTuple):
    """What one pass over the ring found between the consumer and the producer position."""

    records: np.ndarray[Any, Any]  # parse_fixed: (n, size) uint8 rows; parse_variable: n `bytes`
    consumer: int  # the position to publish: past every record delivered or skipped
    blocked: bool  # stopped short of the producer position, at a busy or a foreign record
    foreign: Optional[int] = None  # the size of a record of another size it stepped past


def _bytes_of(data: DataArea) -> np.ndarray[Any, Any]:
    return data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)


def _slot(length: int) -> int:
    """Bytes a record of `length` takes in the ring: header and padding to 8 bytes included."""
    return (_HEADER + length + 7) & ~7


def parse_fixed(
    data: DataArea,
    consumer: int,
    producer: int,
    *,
    size: int,
    holding: bool = False,
    fence: Callable[[], None] = _no_fence,
) -> Parsed:
    """The records of `size` bytes committed between the `consumer` and `producer` positions of a
    ring whose data area, mapped twice, is `data` (uint8). Discarded records are skipped; a busy
    one ends the pass. A committed record of another size ends it too, unless it is at the head
    and nothing came before it (in this pass, or earlier in the caller's drain: `holding`): then
    the pass steps past it and reports its size in `foreign`. `fence` runs between reading the
    headers and copying the records (a memory barrier where the CPU needs one)."""
    data = _bytes_of(data)
    mask = len(data) // 2 - 1
    stride = _slot(size)
    discarded = size | _DISCARD
    parts: list[np.ndarray[Any, Any]] = []
    while consumer < producer:
        start = consumer & mask
        region = data[start : start + (producer - consumer)]
        count = len(region) // stride
        # One row per slot: the header's length word, then the record's bytes.
        slots = region[: count * stride].reshape(count, stride)
        lengths = region.view(np.uint32)[:: stride // 4][:count]
        committed = lengths == size
        fence()
        if committed.all():
            ready = count
            parts.append(slots[:, _HEADER : _HEADER + size].copy())
        else:
            # Records of our size, committed or discarded, up to the first that is neither;
            # past that one the slots no longer line up with headers.
            irregular = np.flatnonzero(~(committed | (lengths == discarded)))
            ready = int(irregular[0]) if len(irregular) else count
            parts.append(slots[:ready, _HEADER : _HEADER + size][committed[:ready]])
        consumer += ready * stride
        if consumer == producer:
            break
        (length,) = _LENGTH.unpack_from(region.data, ready * stride)
        if length in (size, discarded):
            continue  # busy when the headers were read, committed since: read on from it
        if length & _BUSY:
            return Parsed(_joined(parts, size), consumer, True)
        if not length & _DISCARD:
            if holding or any(len(part) for part in parts):
                return Parsed(_joined(parts, size), consumer, True)  # delivered first; the next drain raises
            return Parsed(_joined(parts, size), consumer + _slot(length & _SIZE), True, length & _SIZE)
        consumer += _slot(length & _SIZE)
    return Parsed(_joined(parts, size), consumer, False)


def _joined(parts: list[np.ndarray[Any, Any]], size: int) -> np.ndarray[Any, Any]:
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.empty((0, size), dtype=np.uint8)


def parse_variable(
    data: DataArea, consumer: int, producer: int, *, fence: Callable[[], None] = _no_fence
) -> Parsed:
    """The records of any size committed between the `consumer` and `producer` positions, each
    as `bytes`: what parse_fixed does, header by header. No size is foreign here."""
    raw = _bytes_of(data).data  # a memoryview: a slice of it costs less than a numpy slice
    mask = len(raw) // 2 - 1
    samples: list[bytes] = []
    blocked = False
    while consumer < producer:
        start = consumer & mask
        (length,) = _LENGTH.unpack_from(raw, start)
        if length & _BUSY:
            blocked = True
            break
        fence()
        if not length & _DISCARD:
            samples.append(raw[start + _HEADER : start + _HEADER + (length & _SIZE)].tobytes())
        consumer += _slot(length & _SIZE)
    records = np.empty(len(samples), dtype=object)
    records[:] = samples
    return Parsed(records, consumer, blocked)


class _Fence:
    """A full memory barrier between reading the producer position, the headers, the records
    and writing the consumer position. x86 keeps loads in order and stores after loads, so it
    needs none. Python has no barrier of its own: a lock released and taken again is one, since
    a release followed by an acquire is ordered (arm64: RCsc store-release → load-acquire)."""

    def __init__(self) -> None:
        self._lock: Optional[threading.Lock] = None
        if platform.machine() not in ("x86_64", "AMD64", "i386", "i686"):
            self._lock = threading.Lock()
            self._lock.acquire()

    def __call__(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock.acquire()


def _record_maker(codec: TypeCodec) -> Callable[[np.ndarray[Any, Any]], Iterable[Any]]:
    """How a batch becomes the record type's frozen dataclasses. Where every field is a plain
    number or char array: one `tolist()` per field and one constructor call per record, which
    gives what `codec.to_python` gives at a fraction of the cost; otherwise record by record
    through the codec (enums, nested structs, arrays, bitfields)."""

    def by_record(batch: np.ndarray[Any, Any]) -> Iterable[Any]:
        return map(codec.to_python, batch)

    struct_type = codec.btf.resolve(codec.type_id)
    if struct_type.kind not in (Kind.STRUCT, Kind.UNION):
        return by_record
    # The class to_python makes (the same one for every record of this codec).
    cls = type(codec.to_python(np.zeros(1, dtype=codec.dtype)[0]))
    if not dataclasses.is_dataclass(cls):
        return by_record
    members = {m.name: m for m in struct_type.members if m.name}
    names = [field.name for field in dataclasses.fields(cls)]
    for name in names:
        member = members.get(name)
        if member is None or member.bitfield_size:
            return by_record
        kind = codec.btf.resolve(member.type_id).kind
        numpy_kind = codec.dtype[name].kind
        plain = (
            (kind == Kind.INT and numpy_kind in "iub")
            or (kind == Kind.FLOAT and numpy_kind == "f")
            or (kind == Kind.ARRAY and numpy_kind == "S")
        )
        if not plain:
            return by_record

    def by_column(batch: np.ndarray[Any, Any]) -> Iterable[Any]:
        return map(cls, *[batch[name].tolist() for name in names])

    return by_column


def _as_is(batch: np.ndarray[Any, Any]) -> Iterable[Any]:
    return batch


def record_decoding(record: Record, what: str) -> tuple[np.dtype[Any], Decoder]:
    """The dtype of a batch of `record`s and how records() makes a batch into single records: frozen
    dataclasses for a BTF type, numpy records for a dtype, `bytes` objects for bytes. Shared by every
    buffer reader (ring and perf buffers)."""
    if record is bytes:
        return np.dtype(object), _as_is
    if isinstance(record, TypeCodec):
        return record.dtype, _record_maker(record)
    if isinstance(record, np.dtype) and not record.hasobject:
        return record, _as_is
    raise TypeMismatchError(f"{what}: a record is a TypeCodec, a numpy dtype or bytes, not {record!r}")


class RingBuffer:
    """Reads ring buffer map `ring` (BPF_MAP_TYPE_RINGBUF). Its records are `record`: a BTF struct
    (`obj.btf.struct("event")`; records() yields its frozen dataclasses), a numpy dtype (records()
    yields numpy records), or `bytes` for records of any size. `poll()` and `drain()` return a
    batch, a numpy array of the record type (of `bytes` objects for `bytes`), possibly empty;
    `records()` and iteration yield one record at a time from the same batches. `lost` counts what
    the programs failed to reserve, from `lost`: DEFINE_RINGBUF's per-CPU counter beside the ring
    (or any array map whose entry 0 counts); `received` is what this reader has delivered."""

    def __init__(self, ring: Map, *, record: Record = bytes, lost: Optional[Map] = None) -> None:
        if ring.type != MapType.RINGBUF:
            raise BpfscopeError(errno.EINVAL, f"map {ring.name!r} is not a ring buffer (BPF_MAP_TYPE_RINGBUF)")
        self.name = ring.name
        self.record = record
        self.received = 0
        self._lost_map = lost
        self._fence = _Fence()
        self._size = ring.max_entries
        self.dtype, self._make_records = record_decoding(record, f"ring {self.name!r}")
        self._itemsize = 0 if record is bytes else self.dtype.itemsize  # 0: records of any size
        if record is not bytes and not 0 < self._itemsize <= self._size - _HEADER:
            raise TypeMismatchError(
                f"ring {self.name!r}: a {self._itemsize}-byte record cannot be in a {self._size}-byte ring")
        self._fd = ring.fd
        page = mmap.PAGESIZE
        self._consumer_mmap = mmap.mmap(self._fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            self._producer_mmap = mmap.mmap(self._fd, page + 2 * self._size, mmap.MAP_SHARED, mmap.PROT_READ,
                                            offset=page)
        except BaseException:
            self._consumer_mmap.close()
            raise
        self._consumer_pos = np.frombuffer(self._consumer_mmap, dtype=np.uint64, count=1)
        self._producer_pos = np.frombuffer(self._producer_mmap, dtype=np.uint64, count=1)
        self._data = np.frombuffer(self._producer_mmap, dtype=np.uint8, offset=page)
        self._epoll: Optional[select.epoll] = select.epoll()
        # Edge-triggered: an event per wakeup by the kernel, not one for as long as records wait, so
        # next_batch() can sleep while programs fill the ring without waking anyone.
        self._epoll.register(self._fd, select.EPOLLIN | select.EPOLLET)

    def fileno(self) -> int:
        """The ring's fd: readable while records wait (for a caller's own select/epoll loop)."""
        return self._fd

    @property
    def lost(self) -> int:
        """Records the programs could not reserve because the ring was full, over all CPUs."""
        if self._lost_map is None:
            return 0
        counted = self._lost_map.lookup(0)
        return sum(int(v) for v in counted) if isinstance(counted, tuple) else int(counted or 0)

    @property
    def pending_bytes(self) -> int:
        """Bytes reserved by the programs and not yet consumed, headers included."""
        return int(self._producer_pos[0]) - int(self._consumer_pos[0])

    def _parse(self, consumer: int, end: int, holding: bool) -> Parsed:
        if self._itemsize:
            return parse_fixed(self._data, consumer, end, size=self._itemsize, holding=holding, fence=self._fence)
        return parse_variable(self._data, consumer, end, fence=self._fence)

    def drain(self) -> np.ndarray[Any, Any]:
        """Every committed record now in the ring, in order, as one array; never waits. Raises
        TypeMismatchError, after stepping past it, for a record of another size at the head."""
        if self._epoll is None:
            raise BpfscopeError(errno.EBADF, f"ring buffer {self.name!r} is closed")
        consumer = int(self._consumer_pos[0])
        end = int(self._producer_pos[0])
        if consumer >= end:
            return np.empty(0, dtype=self.dtype)
        self._fence()
        parsed = self._parse(consumer, end, False)
        self._fence()
        self._consumer_pos[0] = parsed.consumer
        records = parsed.records
        # Look again once (see the module docstring): more passes would chase a fast producer
        # a few records at a time, paying per pass what a batch is meant to save.
        if not parsed.blocked:
            end = int(self._producer_pos[0])
            if end != parsed.consumer:
                self._fence()
                again = self._parse(parsed.consumer, end, len(records) > 0)
                self._fence()
                self._consumer_pos[0] = again.consumer
                records = np.concatenate([records, again.records]) if len(records) else again.records
                parsed = again
        if parsed.foreign is not None:  # stepped past only at the head: `records` is empty
            raise TypeMismatchError(
                f"ring {self.name!r}: a {parsed.foreign}-byte record where {self._record_name()} "
                f"({self._itemsize} bytes) was expected; skipped it"
            )
        batch = records.view(self.dtype).reshape(-1) if self._itemsize else records
        self.received += len(batch)
        return batch

    def _record_name(self) -> str:
        return self.record.name if isinstance(self.record, TypeCodec) else "the record dtype"

    def poll(self, timeout_ms: int = 100) -> np.ndarray[Any, Any]:
        """A batch of records: what is there now, or what arrives within `timeout_ms` (-1: wait
        for ever). Programs that submit with BPF_RB_NO_WAKEUP wake nobody: then this returns
        after `timeout_ms` with what they left."""
        batch = self.drain()
        if len(batch) or timeout_ms == 0:
            return batch
        assert self._epoll is not None  # drain() raised if closed
        # drain() found the ring empty after its last store of the consumer position, so the
        # next record committed finds the consumer caught up and wakes us (the kernel's adaptive
        # wakeup), even if it lands before epoll_wait does.
        self._epoll.poll(timeout_ms / 1000 if timeout_ms >= 0 else -1)
        return self.drain()

    def next_batch(self, timeout_ms: int = 100) -> np.ndarray[Any, Any]:
        """The records up to the kernel's next wakeup: waits until a program wakes the reader or
        `timeout_ms` passes (0: not at all), then drains. For programs that wake the reader once per
        so many bytes (BPF_RB_NO_WAKEUP, with BPF_RB_FORCE_WAKEUP now and then), this gives large
        batches at a high rate and one batch per `timeout_ms` at a low one, with no drain in
        between: the reader's cost is per batch, never per record. A wakeup that came while the
        caller was busy ends the next wait at once."""
        if self._epoll is None:
            raise BpfscopeError(errno.EBADF, f"ring buffer {self.name!r} is closed")
        if timeout_ms:
            self._epoll.poll(timeout_ms / 1000 if timeout_ms > 0 else -1)
        return self.drain()

    def records(self, timeout_ms: int = 100) -> Iterator[Any]:
        """One typed record (a frozen dataclass) at a time, drawn from poll()'s batches; stops at
        a poll that returns nothing within `timeout_ms`."""
        # chain() hands the records on in C: no generator frame resumed per record.
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
        """Unmaps the ring; the map itself belongs to the object. Safe to call twice."""
        epoll, self._epoll = self._epoll, None
        if epoll is None:
            return
        epoll.close()
        # numpy views hold the mmaps' buffers: drop them before unmapping.
        del self._consumer_pos, self._producer_pos, self._data
        for mapping in (self._consumer_mmap, self._producer_mmap):
            try:
                mapping.close()
            except BufferError:
                pass  # a view is still alive somewhere (a traceback's frame): unmapped when it dies

    def __enter__(self) -> RingBuffer:
        return self

    def __exit__(
        self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[Any]:
        return self.records()
