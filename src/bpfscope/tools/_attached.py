"""What the streaming tools (opensnoop, execsnoop, httptrace, tcmon) hold while they run: a loaded
object, the links that attach its programs, and the ring buffer they write to; and how it goes away."""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import Optional, TypeVar

from ..link import Link
from ..object import Object
from ..ringbuf import RingBuffer

_Self = TypeVar("_Self", bound="Attached")


class Attached:
    """A base for a tool that `open()` loads and attaches; `close()` and `with` undo it all, and
    closing twice is harmless."""

    def __init__(self) -> None:
        self._obj: Optional[Object] = None
        self._ring: Optional[RingBuffer] = None
        self._links: list[Link] = []

    def open(self: _Self) -> _Self:
        raise NotImplementedError

    @property
    def obj(self) -> Object:
        assert self._obj is not None, "open() first"
        return self._obj

    @property
    def links(self) -> tuple[Link, ...]:
        return tuple(self._links)

    def close(self) -> None:
        """Links first, so the programs stop before what they write to goes; the ring's reader before
        the object, which owns the ring's map."""
        links, self._links = self._links, []
        for link in links:
            with contextlib.suppress(OSError):  # one that cannot detach (its interface gone) must not hold up the rest
                link.close()
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        if self._obj is not None:
            self._obj.close()
            self._obj = None

    def __enter__(self: _Self) -> _Self:
        return self.open()

    def __exit__(
        self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.close()
