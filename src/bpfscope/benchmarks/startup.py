"""`bpfscope bench startup`: how long `bpfscope packets --iface lo` takes from exec until its XDP
program is attached, and its peak resident memory, beside the same load + attach done by a bare
`python -c` script through the library, and that beside the interpreter alone.

"Attached" is read from the outside, so nothing in the tool has to cooperate: from the moment of
Popen, this process asks the kernel every millisecond whether lo has an XDP program (RTM_GETLINK
over rtnetlink, the IFLA_XDP attribute; about as cheap as a syscall round trip). Peak memory is
the child's VmHWM in /proc/<pid>/status, read every few milliseconds while it runs: the high-water
mark of the new process image, which ru_maxrss is not (it also keeps the forking parent's).
Children cache their bytecode in a temporary directory and a first round warms it, so the figures
are those of an installed package, wherever this checkout may write .pyc files or not."""

from __future__ import annotations

import errno
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..errors import BpfscopeError
from . import Figure, Rounds, rounds

__all__ = ["run", "XdpWatch", "Launch", "launch", "package_env"]

IFACE = "lo"

# include/uapi/linux/rtnetlink.h, if_link.h, netlink.h
_RTM_GETLINK = 18
_NLM_F_REQUEST = 1
_NLMSG_ERROR = 2
_IFLA_EXT_MASK = 29
_IFLA_XDP = 43
_IFLA_XDP_PROG_ID = 4
_IFLA_XDP_SKB_PROG_ID = 6
_IFLA_XDP_DRV_PROG_ID = 5
_RTEXT_FILTER_SKIP_STATS = 1 << 3
_NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER

_LIBRARY_ONLY = """\
import sys, time
from bpfscope.object import ObjectSpec, tool_object
obj = ObjectSpec.open(tool_object("packets")).load()
link = obj.programs["count_packets"].attach_xdp(sys.argv[1])
time.sleep(float(sys.argv[2]))
link.close()
obj.close()
"""


class XdpWatch:
    """Which XDP program an interface runs, asked over one rtnetlink socket (RTM_GETLINK)."""

    def __init__(self, iface: str) -> None:
        self.iface = iface
        index = socket.if_nametoindex(iface)
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        self._sock.bind((0, 0))
        ifinfomsg = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, 0, 0)
        ext_mask = struct.pack("=HHI", 8, _IFLA_EXT_MASK, _RTEXT_FILTER_SKIP_STATS)
        self._request = struct.pack("=IHHII", 16 + len(ifinfomsg) + len(ext_mask), _RTM_GETLINK,
                                    _NLM_F_REQUEST, 1, 0) + ifinfomsg + ext_mask

    def prog_id(self) -> int:
        """The id of the XDP program attached to the interface (any mode), 0 if none."""
        self._sock.send(self._request)
        reply = self._sock.recv(1 << 16)
        _, kind = struct.unpack_from("=IH", reply)
        if kind == _NLMSG_ERROR:
            err = -struct.unpack_from("=i", reply, 16)[0]
            raise BpfscopeError(err, f"RTM_GETLINK {self.iface}: {os.strerror(err)}")
        for attr, offset, end in _attributes(reply, 32, len(reply)):
            if attr == _IFLA_XDP:
                for inner, value, _ in _attributes(reply, offset, end):
                    if inner in (_IFLA_XDP_PROG_ID, _IFLA_XDP_SKB_PROG_ID, _IFLA_XDP_DRV_PROG_ID):
                        return int(struct.unpack_from("=I", reply, value)[0])
        return 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> XdpWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _attributes(data: bytes, offset: int, end: int) -> list[tuple[int, int, int]]:
    """(type, value offset, value end) of each netlink attribute in data[offset:end]."""
    found = []
    while offset + 4 <= end:
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        found.append((kind & _NLA_TYPE_MASK, offset + 4, offset + length))
        offset += (length + 3) & ~3
    return found


@dataclass(frozen=True)
class Launch:
    """One run of a command: exec → attached (None if it never attached), exec → exit, peak RSS."""

    attached_ms: Optional[float]
    exited_ms: float
    peak_rss_mib: float


def _vm_hwm_kib(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return None  # exited, or a zombie: no memory left to report


def package_env(pycache: str) -> dict[str, str]:
    """The environment for a child: this bpfscope first on PYTHONPATH, so it runs the same code, and
    bytecode cached under `pycache` even where PYTHONDONTWRITEBYTECODE is set, as a pip-installed
    package has its .pyc files; compiling every module at every start is not what users pay."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env["PYTHONPYCACHEPREFIX"] = pycache
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def launch(
    command: Sequence[str], *, env: dict[str, str], watch: Optional[XdpWatch] = None, timeout: float = 60.0
) -> Launch:
    """Runs `command` to its end. With `watch`, polls every millisecond from Popen until the watched
    interface has an XDP program; meanwhile and after, samples the child's VmHWM every 5 ms."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter_ns()
        # Popen returns once the child has exec'd (vfork, or the CLOEXEC error pipe after fork),
        # so every VmHWM sample below is of the new program, not of this process's copy.
        proc = subprocess.Popen(list(command), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                env=env)
        attached_ns: Optional[int] = None
        peak_kib = 0
        deadline = start + int(timeout * 1e9)
        try:
            while proc.poll() is None:
                now = time.perf_counter_ns()
                if now > deadline:
                    raise BpfscopeError(errno.ETIMEDOUT,
                                        f"{_short(command)} still runs after {timeout:.0f} s")
                if watch is not None and attached_ns is None:
                    if watch.prog_id():
                        attached_ns = time.perf_counter_ns() - start
                    else:
                        time.sleep(0.001)
                        continue
                peak_kib = max(peak_kib, _vm_hwm_kib(proc.pid) or 0)
                time.sleep(0.005)
            exited_ns = time.perf_counter_ns() - start
        finally:
            if proc.poll() is None:
                proc.terminate()  # SIGTERM: the tool detaches on its way out
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if proc.returncode != 0:
            out.seek(0)
            lines = out.read().decode(errors="replace").strip().splitlines()
            raise BpfscopeError(errno.EIO, f"{_short(command)} exited with {proc.returncode}: "
                                           f"{lines[-1] if lines else 'no output'}")
    if watch is not None and attached_ns is None:
        raise BpfscopeError(errno.EIO, f"{_short(command)} exited without attaching XDP to {watch.iface}")
    return Launch(None if attached_ns is None else attached_ns / 1e6, exited_ns / 1e6, peak_kib / 1024)


def _short(command: Sequence[str]) -> str:
    return " ".join(os.path.basename(part) if i == 0 else part for i, part in enumerate(command))[:80]


def _wait_detached(watch: XdpWatch, after: str, timeout: float = 2.0) -> None:
    """Waits until the watched interface runs no XDP program: a link closed by a process's exit is
    released by a kernel worker a moment later, and the next launch must start from nothing."""
    deadline = time.monotonic() + timeout
    while watch.prog_id():
        if time.monotonic() > deadline:
            raise BpfscopeError(errno.EBUSY, f"an XDP program is still attached to {watch.iface} "
                                             f"{timeout:.0f} s after {after}")
        time.sleep(0.001)


def run(*, runs: int = 5, duration: float = 1.0) -> list[Figure]:
    """Runs `bpfscope packets --iface lo --duration <duration> --json` `runs` times, and as often the
    library-only script and the bare interpreter, in rounds of one each (noise then lands on all of
    them alike) after one warm-up round; figures are medians over rounds."""
    python = sys.executable
    arguments = ["packets", "--iface", IFACE, "--duration", f"{duration:g}", "--json"]
    with XdpWatch(IFACE) as watch:
        busy = watch.prog_id()
        if busy:
            raise BpfscopeError(errno.EBUSY, f"{IFACE} already runs XDP program id {busy}; "
                                             "the startup benchmark attaches its own there")
        commands = {
            "tool": ([python, "-m", "bpfscope.cli.main", *arguments], watch),
            "library": ([python, "-c", _LIBRARY_ONLY, IFACE, f"{duration:g}"], watch),
            "pass": ([python, "-c", "pass"], None),
            "sleep": ([python, "-c", f"import time; time.sleep({duration:g})"], None),
        }
        launches: dict[str, list[Launch]] = {key: [] for key in commands}
        with tempfile.TemporaryDirectory(prefix="bpfscope-bench-pycache-") as pycache:
            env = package_env(pycache)
            for round_ in range(runs + 1):  # round 0 warms the bytecode cache and is not counted
                for key, (command, watched) in commands.items():
                    result = launch(command, env=env, watch=watched)
                    if watched is not None:
                        _wait_detached(watched, _short(command))
                    if round_:
                        launches[key].append(result)

    def over_rounds(key: str, field: str) -> tuple[float, Rounds]:
        return rounds(float(getattr(x, field)) for x in launches[key])

    def figure(name: str, key: str, field: str, unit: str, reference: str, reference_key: str,
               reference_field: str, note: str, target: Optional[float] = None) -> Figure:
        value, spread = over_rounds(key, field)
        reference_value, reference_spread = over_rounds(reference_key, reference_field)
        return Figure("startup", name, value, unit, False, target=target, reference=reference,
                      reference_value=reference_value, spread=spread, reference_spread=reference_spread, note=note)

    how = (f"median of {runs} rounds after a warm-up round, range beside it; bytecode cached; "
           f"python -m bpfscope.cli.main {' '.join(arguments)}")
    return [
        figure("bpfscope packets: exec → XDP attached", "tool", "attached_ms", "ms",
               "library only: load + attach_xdp (python -c)", "library", "attached_ms",
               f"{how}; attach seen over rtnetlink, polled every 1 ms", target=150.0),
        figure("library only: exec → XDP attached", "library", "attached_ms", "ms",
               "python3 -c pass: exec → exit", "pass", "exited_ms",
               f"imports bpfscope.object, opens, loads, attaches; no CLI; median of {runs} rounds, range beside it"),
        figure("bpfscope packets: peak RSS (VmHWM)", "tool", "peak_rss_mib", "MiB",
               "library only: peak RSS", "library", "peak_rss_mib", how, target=40.0),
        figure("library only: peak RSS (VmHWM)", "library", "peak_rss_mib", "MiB",
               "python3 -c 'time.sleep()': peak RSS", "sleep", "peak_rss_mib",
               f"median of {runs} rounds, range beside it"),
    ]
