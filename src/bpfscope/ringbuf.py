"""Ring buffer reader: the mmap'd ring drained straight into a numpy structured array.

The kernel's BPF ring buffer (BPF_MAP_TYPE_RINGBUF) is a consumer page (writable by us), a
producer page, and the data area mapped twice back to back, so a record that wraps past the end
still reads contiguously. Each record has an 8-byte header: its length with the BUSY (reserved,
not yet committed) and DISCARD bits, then a page offset. Records are 8-byte aligned.

All records of one DEFINE_RINGBUF have the same size, so a batch is a strided view over the ring:
numpy checks every header and copies every record in a few C loops, with no Python per event.
What a drain does with each record, in ring order:

- committed, of the record type's size: delivered;
- discarded (bpf_ringbuf_discard): skipped; not delivered, not counted as lost;
- busy: the batch stops there, even if later records are committed (the kernel hands out
  space in order, and the consumer position cannot pass a record still being written);
- committed with another size (bpf_ringbuf_output of some other struct): an error in the
  BPF program. The records before it are delivered; the drain that finds it at the head
  of the ring steps past it and raises TypeMismatchError, so a caller that catches the
  error reads on from the next record.

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
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional

import numpy as np

from .btf import Kind, TypeCodec
from .errors import BpfscopeError, TypeMismatchError
from .maps import MapType

if TYPE_CHECKING:
    from .object import Object

__all__ = ["RingBuffer"]

_BUSY = 1 << 31  # BPF_RINGBUF_BUSY_BIT
_DISCARD = 1 << 30  # BPF_RINGBUF_DISCARD_BIT
_SIZE = _DISCARD - 1
_HEADER = 8  # BPF_RINGBUF_HDR_SZ
_CHUNK = 1024  # records made into Python objects at a time: small enough to stay in cache


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

    struct = codec.btf.resolve(codec.type_id)
    if struct.kind not in (Kind.STRUCT, Kind.UNION):
        return by_record
    # The class to_python makes (the same one for every record of this codec).
    cls = type(codec.to_python(np.zeros(1, dtype=codec.dtype)[0]))
    if not dataclasses.is_dataclass(cls):
        return by_record
    members = {m.name: m for m in struct.members if m.name}
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


class RingBuffer:
    """Reads ring buffer map `name` of a loaded object. `poll()` and `drain()` return a batch (a
    numpy array of the record type, possibly empty); `records()` and iteration yield one frozen
    dataclass at a time from the same batches. `lost` is what the programs failed to reserve
    (DEFINE_RINGBUF's counter); `received` is what this reader has delivered."""

    def __init__(self, obj: Object, name: str) -> None:
        ring = obj.maps.get(name)
        if ring is None or ring.type != MapType.RINGBUF:
            raise BpfscopeError(errno.ENOENT, f"the object has no ring buffer map {name!r}")
        self.name = name
        self.record = obj.exported_type(name)
        self.dtype = self.record.dtype
        self.received = 0
        self._lost_map = obj.maps.get(f"{name}_lost")
        self._make_records = _record_maker(self.record)
        self._fence = _Fence()
        self._size = ring.max_entries
        self._mask = self._size - 1
        self._itemsize = self.dtype.itemsize
        self._stride = (_HEADER + self._itemsize + 7) & ~7
        self._discarded = self._itemsize | _DISCARD
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
        return sum(int(v) for v in self._lost_map.lookup(0))

    @property
    def pending_bytes(self) -> int:
        """Bytes reserved by the programs and not yet consumed, headers included."""
        return int(self._producer_pos[0]) - int(self._consumer_pos[0])

    def drain(self) -> np.ndarray[Any, Any]:
        """Every committed record now in the ring, in order, as one array; never waits. Raises
        TypeMismatchError, after stepping past it, for a record of another size at the head."""
        if self._epoll is None:
            raise BpfscopeError(errno.EBADF, f"ring buffer {self.name!r} is closed")
        consumer = int(self._consumer_pos[0])
        end = int(self._producer_pos[0])
        if consumer >= end:
            return np.empty(0, dtype=self.dtype)
        batches: list[np.ndarray[Any, Any]] = []
        looked_again = False
        while True:
            self._fence()
            consumer, blocked, mismatch = self._take(consumer, end, batches)
            self._fence()
            self._consumer_pos[0] = consumer
            if mismatch is not None:
                raise TypeMismatchError(
                    f"ring {self.name!r}: a {mismatch}-byte record where {self.record.name} "
                    f"({self._itemsize} bytes) was expected; skipped it"
                )
            # Look again once (see the module docstring): more passes would chase a fast producer
            # a few records at a time, paying per pass what a batch is meant to save.
            if blocked or looked_again:
                break
            looked_again = True
            end = int(self._producer_pos[0])
            if end == consumer:
                break
        result = batches[0] if len(batches) == 1 else np.concatenate(batches)
        self.received += len(result)
        return result

    def _take(
        self, consumer: int, end: int, batches: list[np.ndarray[Any, Any]]
    ) -> tuple[int, bool, Optional[int]]:
        """Appends the committed records between `consumer` and `end` to `batches`. Returns the
        new consumer position, whether a busy or foreign record stopped it, and the size of a
        foreign record it stepped past (to raise for) when nothing came before it."""
        stride = self._stride
        while consumer < end:
            start = consumer & self._mask
            region = self._data[start : start + (end - consumer)]
            count = len(region) // stride
            # One row per slot: the header's length word, then the record's bytes.
            slots = region[: count * stride].reshape(count, stride)
            lengths = region.view(np.uint32)[:: stride // 4][:count]
            committed = lengths == self._itemsize
            self._fence()
            if committed.all():
                ready = count
                records = slots[:, _HEADER : _HEADER + self._itemsize].copy()
            else:
                # Records of our size, committed or discarded, up to the first that is neither;
                # past that one the slots no longer line up with headers.
                irregular = np.flatnonzero(~(committed | (lengths == self._discarded)))
                ready = int(irregular[0]) if len(irregular) else count
                records = slots[:ready, _HEADER : _HEADER + self._itemsize][committed[:ready]]
            batches.append(records.view(self.dtype).reshape(-1))
            consumer += ready * stride
            if consumer == end:
                break
            head = ready * stride
            length = int(region[head : head + 4].view(np.uint32)[0])
            if length & _BUSY:
                return consumer, True, None
            step = (_HEADER + (length & _SIZE) + 7) & ~7
            if not length & _DISCARD:
                if any(len(batch) for batch in batches):
                    return consumer, True, None  # deliver what came before it; the next drain raises
                return consumer + step, True, length & _SIZE
            consumer += step
        return consumer, False, None

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
