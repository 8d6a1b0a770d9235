"""Ring buffer reader: the mmap'd ring drained straight into a numpy structured array.

The kernel's BPF ring buffer is a consumer page (writable by us), a producer page, and the data
area mapped twice back to back so a record that wraps still reads contiguously. Each record has
an 8-byte header: length with BUSY (not yet committed) and DISCARD bits, then the page offset.
All records of one DEFINE_RINGBUF have the same size, so a batch is a strided view over the ring:
numpy checks every header and copies every record in a few C loops, with no Python per event."""

from __future__ import annotations

import errno
import mmap
import select
from types import TracebackType
from typing import TYPE_CHECKING, Any, Iterator, Optional

import numpy as np

from .errors import BpfscopeError, TypeMismatchError
from .maps import MapType

if TYPE_CHECKING:
    from .object import Object

__all__ = ["RingBuffer"]

_BUSY = np.uint32(1 << 31)
_DISCARD = np.uint32(1 << 30)
_HEADER = 8


class RingBuffer:
    """Reads ring buffer map `name` of a loaded object. `poll()` returns a batch (a numpy array of
    the record type, possibly empty); iterating yields one typed record at a time from the same
    batches. `lost` is what the programs failed to reserve (DEFINE_RINGBUF's counter)."""

    def __init__(self, obj: Object, name: str) -> None:
        ring = obj.maps.get(name)
        if ring is None or ring.type != MapType.RINGBUF:
            raise BpfscopeError(errno.ENOENT, f"the object has no ring buffer map {name!r}")
        self.name = name
        self.record = obj.exported_type(name)
        self.dtype = self.record.dtype
        self._lost_map = obj.maps.get(f"{name}_lost")
        self._size = ring.max_entries
        self._mask = self._size - 1
        self._stride = (_HEADER + self.dtype.itemsize + 7) & ~7
        page = mmap.PAGESIZE
        self._consumer_mmap = mmap.mmap(ring.fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._producer_mmap = mmap.mmap(ring.fd, page + 2 * self._size, mmap.MAP_SHARED, mmap.PROT_READ,
                                        offset=page)
        self._consumer_pos = np.frombuffer(self._consumer_mmap, dtype=np.uint64, count=1)
        self._producer_pos = np.frombuffer(self._producer_mmap, dtype=np.uint64, count=1)
        self._data = np.frombuffer(self._producer_mmap, dtype=np.uint8, offset=page)
        self._slot = np.dtype({
            "names": ["len", "rec"], "formats": [np.uint32, self.dtype],
            "offsets": [0, _HEADER], "itemsize": self._stride,
        })
        self._epoll = select.epoll()
        self._epoll.register(ring.fd, select.EPOLLIN)
        self._fd = ring.fd
        self.received = 0

    def fileno(self) -> int:
        """The ring's fd: readable when records wait (for a caller's own select/epoll loop)."""
        return self._fd

    @property
    def lost(self) -> int:
        """Records the programs could not reserve because the ring was full, over all CPUs."""
        if self._lost_map is None:
            return 0
        return sum(int(v) for v in self._lost_map.lookup(0))

    @property
    def pending_bytes(self) -> int:
        return int(self._producer_pos[0]) - int(self._consumer_pos[0])

    def drain(self) -> np.ndarray[Any, Any]:
        """Every committed record now in the ring, in order, as one array; never waits."""
        consumer = int(self._consumer_pos[0])
        available = int(self._producer_pos[0]) - consumer
        if available <= 0:
            return np.empty(0, dtype=self.dtype)
        start = consumer & self._mask
        region = self._data[start : start + available]
        count = available // self._stride
        if available % self._stride == 0:
            slots = region.view(self._slot)
            lengths = slots["len"]
            busy = np.flatnonzero(lengths & _BUSY)
            ready = int(busy[0]) if len(busy) else count
            sizes = lengths[:ready] & ~(_BUSY | _DISCARD)
            if np.all(sizes == self.dtype.itemsize):
                kept = slots["rec"][:ready][(lengths[:ready] & _DISCARD) == 0].copy()
                self._consumer_pos[0] = consumer + ready * self._stride
                self.received += len(kept)
                return kept
        return self._drain_mixed(consumer, region)

    def _drain_mixed(self, consumer: int, region: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Records of other sizes (bpf_ringbuf_output of a different struct): walk the headers."""
        offsets = []
        position = 0
        header = region[: len(region) - len(region) % 4].view(np.uint32)
        while position < len(region):
            length = int(header[position // 4])
            if length & int(_BUSY):
                break
            size = length & ~int(_BUSY | _DISCARD)
            if not length & int(_DISCARD):
                if size != self.dtype.itemsize:
                    raise TypeMismatchError(
                        f"ring {self.name!r}: a {size}-byte record where {self.record.name} "
                        f"({self.dtype.itemsize} bytes) was expected"
                    )
                offsets.append(position + _HEADER)
            position += (_HEADER + size + 7) & ~7
        records = np.empty(len(offsets), dtype=self.dtype)
        raw = records.view(np.uint8).reshape(len(offsets), self.dtype.itemsize)
        for i, offset in enumerate(offsets):
            raw[i] = region[offset : offset + self.dtype.itemsize]
        self._consumer_pos[0] = consumer + position
        self.received += len(records)
        return records

    def poll(self, timeout_ms: int = 100) -> np.ndarray[Any, Any]:
        """A batch of records: what is there now, or what arrives within `timeout_ms`."""
        batch = self.drain()
        if len(batch) or timeout_ms == 0:
            return batch
        # Ring buffer fds are level-triggered: readable while consumer != producer, so a record
        # committed between drain() and here still wakes us.
        self._epoll.poll(timeout_ms / 1000 if timeout_ms >= 0 else -1)
        return self.drain()

    def records(self, timeout_ms: int = 100) -> Iterator[Any]:
        """One typed record (a frozen dataclass) at a time, drawn from poll()'s batches; stops at
        a poll that times out with nothing."""
        while True:
            batch = self.poll(timeout_ms)
            if not len(batch):
                return
            to_python = self.record.to_python
            for raw in batch:
                yield to_python(raw)

    def close(self) -> None:
        if getattr(self, "_epoll", None) is None:
            return
        self._epoll.close()
        self._epoll = None  # type: ignore[assignment]
        # numpy views hold the mmaps' buffers: drop them before unmapping.
        self._consumer_pos = self._producer_pos = self._data = None  # type: ignore[assignment]
        self._consumer_mmap.close()
        self._producer_mmap.close()

    def __enter__(self) -> RingBuffer:
        return self

    def __exit__(
        self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[Any]:
        return self.records()
