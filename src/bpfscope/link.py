"""Links: what keeps a program attached. Each is a context manager and closing twice is harmless.

Every kind but the clsact fallback is fd-based: the kernel detaches it when its last fd closes,
so a process that is killed leaves nothing attached (unless the link was pinned on purpose). A
clsact filter is held by a lease instead, which the next clsact attach on the machine reads to
remove the filters of processes that were killed. The leases are in tc_lease_dir(): /run/bpfscope/tc,
or the directory BPFSCOPE_TC_LEASES names."""

from __future__ import annotations

import contextlib
import ctypes
import enum
import errno
import fcntl
import os
import socket
from types import TracebackType
from typing import TYPE_CHECKING, Any, Optional, Sequence, TypeVar, Union

from . import _libbpf, netdev
from ._uapi import BPF_TC_EGRESS, BPF_TC_INGRESS, SO_DETACH_BPF
from .errors import InterfaceNotFoundError, TypeMismatchError
from .pin import ensure_pin_dir

if TYPE_CHECKING:
    import numpy as np

    from .btf import TypeCodec

__all__ = [
    "Link", "FdLink", "XdpLink", "TcxLink", "LibbpfLink", "IterLink", "TcFilterLink", "SocketFilterLink",
    "ProgAttachLink", "LinkGroup", "XdpMode", "TcDirection", "TcMode", "DEFAULT_TC_LEASES", "TC_LEASES_ENV",
    "tc_lease_dir", "remove_stale_tc_filters",
]

# One file per cls_bpf filter a running bpfscope attached, named <ifindex>-<attach point>-<handle>-<priority>
# and holding the program's id; its process keeps it flock'ed, and the kernel drops the lock with the process.
DEFAULT_TC_LEASES = "/run/bpfscope/tc"
TC_LEASES_ENV = "BPFSCOPE_TC_LEASES"
_ATTACH_POINTS = {BPF_TC_INGRESS: "ingress", BPF_TC_EGRESS: "egress"}


def tc_lease_dir() -> str:
    """Where the leases are: $BPFSCOPE_TC_LEASES, read at each use, or DEFAULT_TC_LEASES. Every bpfscope on
    a machine must use one directory to find the filters the others left (a container mounts the host's)."""
    return os.environ.get(TC_LEASES_ENV) or DEFAULT_TC_LEASES


class XdpMode(enum.Enum):
    """Where XDP runs: AUTO tries the driver and falls back to the generic (skb) path."""

    AUTO = "auto"
    NATIVE = "native"
    GENERIC = "generic"


class TcDirection(enum.Enum):
    INGRESS = "ingress"
    EGRESS = "egress"


class TcMode(enum.Enum):
    """AUTO uses a tcx link where the kernel has one (6.6+) and clsact + cls_bpf otherwise."""

    AUTO = "auto"
    TCX = "tcx"
    CLSACT = "clsact"


_Link = TypeVar("_Link", bound="Link")  # `with attach_xdp(...) as link:` keeps XdpLink


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

    def __enter__(self: _Link) -> _Link:
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


class XdpLink(FdLink):
    """An XDP program on an interface (BPF_LINK_CREATE, BPF_XDP); `mode` is where it runs, NATIVE or
    GENERIC (an AUTO attach says here which it got)."""

    def __init__(self, fd: int, description: str, *, mode: XdpMode) -> None:
        super().__init__(fd, description)
        self.mode = mode


class TcxLink(FdLink):
    """A tc classifier on a tcx hook (BPF_LINK_CREATE, BPF_TCX_INGRESS or BPF_TCX_EGRESS), Linux 6.6+."""

    mode = TcMode.TCX


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


class IterLink(LibbpfLink):
    """An iterator (SEC("iter/...")): each read runs the program afresh over everything it walks (tasks,
    a map's elements, sockets) and returns what it wrote, bpf_seq_printf text or bpf_seq_write records."""

    def read(self) -> bytes:
        """One whole walk's output (BPF_ITER_CREATE, then read to the end)."""
        fd = _libbpf.check(_libbpf.bpf_iter_create(self.fd), f"start {self.description}")
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
        except OSError as exc:
            raise _libbpf.error(exc.errno or errno.EIO, f"read {self.description}") from None
        finally:
            os.close(fd)
        return b"".join(chunks)

    def text(self) -> str:
        """read(), as the text bpf_seq_printf wrote."""
        return self.read().decode(errors="replace")

    def records(self, record: Union[TypeCodec, np.dtype[Any]]) -> np.ndarray[Any, Any]:
        """read(), as an array of fixed-size records: `record` is a TypeCodec (obj.btf.struct("name")) or a
        numpy dtype."""
        import numpy as np

        from .btf import TypeCodec

        dtype = record.dtype if isinstance(record, TypeCodec) else np.dtype(record)
        data = self.read()
        if len(data) % dtype.itemsize:
            raise TypeMismatchError(f"{self.description} wrote {len(data)} bytes, not a whole number of "
                                    f"{dtype.itemsize}-byte records")
        return np.frombuffer(data, dtype=dtype)


class TcFilterLink(Link):
    """A cls_bpf filter under a clsact qdisc, for kernels without tcx. It is not fd-based: close()
    removes it, and a killed process leaves it in place until remove_stale_tc_filters() (which every
    clsact attach runs first) finds its lease abandoned."""

    mode = TcMode.CLSACT

    def __init__(self, hook: _libbpf.BpfTcHook, opts: _libbpf.BpfTcOpts, description: str) -> None:
        self._hook: Optional[_libbpf.BpfTcHook] = hook
        self._handle = opts.handle
        self._priority = opts.priority
        self._prog_fd = opts.prog_fd
        self.description = description
        self._lease = -1
        leases = tc_lease_dir()
        self._lease_path = os.path.join(leases, f"{hook.ifindex}-{hook.attach_point}-{opts.handle}-{opts.priority}")
        try:
            self._take_lease(leases, opts.prog_id)
        except BaseException:
            self.close()
            raise

    def _take_lease(self, leases: str, prog_id: int) -> None:
        os.makedirs(leases, exist_ok=True)
        # Locked and written before it appears under its name, so a sweep never sees it unheld or empty.
        making = f"{self._lease_path}.{os.getpid()}"
        self._lease = os.open(making, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._lease, fcntl.LOCK_EX)
        os.write(self._lease, f"{prog_id}\n".encode())
        os.rename(making, self._lease_path)

    @property
    def fd(self) -> int:
        return int(self._prog_fd)

    @property
    def closed(self) -> bool:
        return self._hook is None

    def pin(self, path: str) -> None:
        raise _libbpf.error(errno.EOPNOTSUPP, f"pin {self.description}", "a tcx link (this kernel only has clsact)")

    def close(self) -> None:
        hook, self._hook = getattr(self, "_hook", None), None
        if hook is not None:
            _detach_filter(hook, self._handle, self._priority)
        lease, self._lease = getattr(self, "_lease", -1), -1
        if lease >= 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._lease_path)
            os.close(lease)


class SocketFilterLink(Link):
    """A socket filter on one socket (SO_ATTACH_BPF). It holds its own fd of the socket, so close() detaches
    from that socket whatever the caller did with theirs; the kernel drops the filter with the socket."""

    def __init__(self, sock: socket.socket, description: str) -> None:
        self._socket: Optional[socket.socket] = sock
        self.description = description

    @property
    def fd(self) -> int:
        return self._socket.fileno() if self._socket is not None else -1

    @property
    def closed(self) -> bool:
        return self._socket is None

    def pin(self, path: str) -> None:
        raise _libbpf.error(errno.EOPNOTSUPP, f"pin {self.description}", "a BPF link (a socket filter lives with "
                                                                        "its socket)")

    def close(self) -> None:
        sock, self._socket = getattr(self, "_socket", None), None
        if sock is not None:
            with contextlib.suppress(OSError):  # the socket may be shut down already
                sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_BPF, 0)
            sock.close()


class ProgAttachLink(Link):
    """A program attached with BPF_PROG_ATTACH where the kernel has no link for the hook (a sockmap's verdict
    before Linux 6.10). It holds fds of the program and the target, and close() detaches; a killed process
    leaves nothing either, as the target (a map) goes with its last fd and takes the program with it."""

    def __init__(self, prog_fd: int, target_fd: int, attach_type: int, description: str) -> None:
        self._prog_fd = os.dup(prog_fd)
        self._target_fd = os.dup(target_fd)
        self._attach_type = attach_type
        self.description = description

    @property
    def fd(self) -> int:
        return self._prog_fd

    @property
    def closed(self) -> bool:
        return self._prog_fd < 0

    def pin(self, path: str) -> None:
        raise _libbpf.error(errno.EOPNOTSUPP, f"pin {self.description}", "a BPF link (Linux 6.10+ for sockmaps)")

    def close(self) -> None:
        prog_fd, self._prog_fd = getattr(self, "_prog_fd", -1), -1
        if prog_fd >= 0:
            _libbpf.bpf_prog_detach2(prog_fd, self._target_fd, self._attach_type)
            os.close(prog_fd)
            os.close(self._target_fd)


def _detach_filter(hook: _libbpf.BpfTcHook, handle: int, priority: int) -> int:
    # libbpf wants prog_fd, flags and prog_id zero when it detaches by handle and priority.
    opts = _libbpf.BpfTcOpts(sz=ctypes.sizeof(_libbpf.BpfTcOpts))
    opts.handle, opts.priority = handle, priority
    return int(_libbpf.bpf_tc_detach(hook, opts))


def remove_stale_tc_filters() -> list[str]:
    """Detaches the cls_bpf filters of bpfscope processes that ended without closing them (killed), where
    the filter still runs the program it was made for; returns a description of each one removed."""
    leases = tc_lease_dir()
    try:
        names = os.listdir(leases)
    except FileNotFoundError:
        return []
    removed = []
    for name in names:
        fields = name.split("-")
        if len(fields) != 4 or not all(field.isdigit() for field in fields):
            continue  # a lease being made
        path = os.path.join(leases, name)
        try:
            lease = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # closed, or swept by another process, since listdir
        try:
            try:
                fcntl.flock(lease, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its process is alive
            if os.fstat(lease).st_ino != os.stat(path).st_ino:
                continue  # a live filter's new lease took this name meanwhile
            prog_id = int(os.read(lease, 32) or -1)
            ifindex, attach_point, handle, priority = (int(field) for field in fields)
            hook = _libbpf.BpfTcHook(sz=ctypes.sizeof(_libbpf.BpfTcHook), ifindex=ifindex, attach_point=attach_point)
            opts = _libbpf.BpfTcOpts(sz=ctypes.sizeof(_libbpf.BpfTcOpts), handle=handle, priority=priority)
            # Gone with its interface or its qdisc, or the slot reused by another program: not ours to remove.
            if _libbpf.bpf_tc_query(hook, opts) == 0 and opts.prog_id == prog_id:
                if _detach_filter(hook, handle, priority) == 0:
                    removed.append(f"the tc {_ATTACH_POINTS.get(attach_point, attach_point)} filter of program "
                                   f"{prog_id} on {_interface_name(ifindex)}")
            os.unlink(path)
        except FileNotFoundError:
            pass  # swept by another process between our open and our lock
        except ValueError:
            os.unlink(path)  # not a lease bpfscope wrote
        finally:
            os.close(lease)
    return removed


def _interface_name(ifindex: int) -> str:
    try:
        return netdev.ifname(ifindex)
    except InterfaceNotFoundError:
        return f"interface #{ifindex}"


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
