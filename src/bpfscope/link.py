"""Links: what keeps a program attached. Each is a context manager and closing twice is harmless.

Every kind but the clsact fallback is fd-based: the kernel detaches it when its last fd closes,
so a process that is killed leaves nothing attached (unless the link was pinned on purpose)."""

from __future__ import annotations

import ctypes
import os
from types import TracebackType
from typing import Optional, Sequence

from . import _libbpf
from .pin import ensure_pin_dir

__all__ = ["Link", "FdLink", "LibbpfLink", "TcFilterLink", "LinkGroup"]


class Link:
    """Base of all links: `close()` detaches; `with` closes at the end of the block."""

    description = "link"

    @property
    def fd(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        raise NotImplementedError

    def pin(self, path: str) -> None:
        """Pins the link in bpffs so it outlives this process; `unpin` or deleting the file ends it."""
        ensure_pin_dir(path)
        _libbpf.check(_libbpf.bpf_obj_pin(self.fd, path.encode()), f"pin {self.description} at {path}")

    @staticmethod
    def unpin(path: str) -> None:
        os.unlink(path)

    def __enter__(self) -> Link:
        return self

    def __exit__(
        self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self.fd}"
        return f"<{type(self).__name__} {self.description} {state}>"


class FdLink(Link):
    """A BPF link made by BPF_LINK_CREATE (XDP, tcx) and owned as a plain fd."""

    def __init__(self, fd: int, description: str) -> None:
        self._fd = fd
        self.description = description

    @property
    def fd(self) -> int:
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        fd, self._fd = getattr(self, "_fd", -1), -1
        if fd >= 0:
            os.close(fd)


class LibbpfLink(Link):
    """A `struct bpf_link` from one of libbpf's attach functions (tracepoint, uprobe, perf event)."""

    def __init__(self, ptr: int, description: str) -> None:
        self._ptr = ptr
        self.description = description

    @property
    def fd(self) -> int:
        return int(_libbpf.bpf_link__fd(self._ptr))

    @property
    def closed(self) -> bool:
        return not self._ptr

    def close(self) -> None:
        ptr, self._ptr = getattr(self, "_ptr", 0), 0
        if ptr:
            _libbpf.bpf_link__destroy(ptr)


class TcFilterLink(Link):
    """A cls_bpf filter under a clsact qdisc, for kernels without tcx. It is not fd-based: close()
    removes it, but a killed process leaves it in place until the qdisc is deleted."""

    def __init__(self, hook: _libbpf.BpfTcHook, opts: _libbpf.BpfTcOpts, description: str) -> None:
        self._hook: Optional[_libbpf.BpfTcHook] = hook
        self._handle = opts.handle
        self._priority = opts.priority
        self._prog_fd = opts.prog_fd
        self.description = description

    @property
    def fd(self) -> int:
        return int(self._prog_fd)

    @property
    def closed(self) -> bool:
        return self._hook is None

    def pin(self, path: str) -> None:
        raise _libbpf.error(95, f"pin {self.description}", "a tcx link (this kernel only has clsact)")

    def close(self) -> None:
        hook, self._hook = getattr(self, "_hook", None), None
        if hook is not None:
            # libbpf wants prog_fd, flags and prog_id zero when it detaches by handle and priority.
            opts = _libbpf.BpfTcOpts(sz=ctypes.sizeof(_libbpf.BpfTcOpts))
            opts.handle, opts.priority = self._handle, self._priority
            _libbpf.bpf_tc_detach(hook, opts)


class LinkGroup(Link):
    """Several links that attach one program in several places (a perf event on every CPU)."""

    def __init__(self, links: Sequence[Link], description: str) -> None:
        self.links = list(links)
        self.description = description

    @property
    def fd(self) -> int:
        return self.links[0].fd

    @property
    def closed(self) -> bool:
        return all(link.closed for link in self.links)

    def pin(self, path: str) -> None:
        for i, link in enumerate(self.links):
            link.pin(f"{path}_{i}")

    def close(self) -> None:
        for link in getattr(self, "links", ()):
            link.close()
