"""`bpfscope bench guard`: what bpfscope guard costs per dropped packet, and how many packets a second
it drops, beside nftables doing the same per-source limit (`meter ... limit rate over`) and beside a
plain nftables drop, on the same veth under the same flood, in interleaved rounds. Guard is also
measured as it is deployed: with 10,000 deny and 10,000 allow prefixes loaded that the flood does
not match (nftables given the same prefixes in two interval sets before its meter), and under a
flood from 100,000 sources, more than guard's per-source LRU holds (nftables: the same meter).

The world: a VethPair of its own; the receiver under test is its root-namespace end. The flood is
made in the other namespace by child processes (`ip netns exec`) and leaves the peer end, in one
of two ways, chosen by probing (features.probe(Feature.XDP_LIVE_FRAMES)):
- XDP live frames, where the kernel allows them: one child runs send_flood (guard_bench.bpf.c)
  through BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES. Each frame the program returns XDP_TX
  for enters the receiver's ring as an xdp_frame, no skb made, as a NIC's frames would, at more
  than any configuration takes.
- AF_PACKET where the kernel refuses them (this 6.18 build: EPERM, even to root): one child per
  sending CPU (all but the receiver's, at most _MAX_SENDERS) sends precomputed frames, 1024 per
  sendmmsg, on a packet socket past the qdisc (PACKET_QDISC_BYPASS). That is about 1 Mpps from one
  CPU, and each frame enters the receiver's ring as an skb built on the sender's CPU. An XDP
  program on a veth cannot run on such an skb in place: the veth copies it into a page first (its
  head is no page fragment and has less than XDP_PACKET_HEADROOM), so every XDP configuration pays
  that copy, as the empty XDP_DROP program's figure shows. Two more settings for this flood only:
  TSO is off on the sending end (with it, the receiving veth gives the skbs to the stack on the
  sender's CPU instead of to its ring and NAPI), and the receiver coalesces (napi_defer_hard_irqs,
  gro_flush_timeout), as a NIC's interrupt moderation does: without it a flood this slow wakes the
  NAPI thread every few frames, and the configurations that are done with a frame soonest pay for
  the most wake-ups (interleaved on this machine: the empty program 805 → 496 ns per drop, guard
  759 → 540, the nftables meter 658 → 618).
Either flood gives each frame the next of `sources` source addresses in 198.18.0.0/15 (RFC 2544's
benchmarking range), with a correct IP header checksum and no UDP checksum.

The sender(s) are pinned apart from the receiver, whose NAPI runs threaded
(/sys/class/net/<if>/threaded) in a kernel thread pinned to a CPU of its own, and GRO is switched on
so the veth has NAPI even with no XDP program. So every configuration takes one path, veth ring →
NAPI poll, and differs only past it: guard (XDP in the poll), or an skb, GRO, the netdev ingress
hook and nftables.

Cost per dropped packet is the NAPI thread's CPU time (sum_exec_runtime, /proc/<pid>/schedstat,
in ns) over the packets dropped, both counted with the flood stopped: everything the receiving
side does per packet, wherever the drop happens in it. Drop rate is dropped packets over the
flood's wall time; where the flood offers more than a configuration takes, it is the receiver's
capacity on its one CPU (what it cannot take, the full ring refuses), else the flood's rate.
Under 100,000 sources few packets may be dropped, so the cost there is per packet received
(dropped, or passed up to the stack), and the share dropped is given.

Guard's own counts are checked against the veth's in every flood into guard: guard's passed +
dropped must equal the veth's rx_packets (the veth counts every frame or skb its NAPI takes from
the ring, before any XDP program runs, so XDP drops are in rx_packets and not in rx_dropped), and
under native XDP guard's dropped must equal the veth's own count of XDP drops (ethtool -S
rx_queue_N_xdp_drops); generic XDP runs later, in the stack, and its drops are in no veth counter.
A disagreement stops the benchmark. What the full ring refused is in the receiver's rx_dropped
(live frames; the sending end's tx_dropped reports the same frames again) or in the sending end's
tx_dropped alone (AF_PACKET): offered = received + refused."""

from __future__ import annotations

import array
import ctypes
import errno
import fcntl
import ipaddress
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .._uapi import BPF_F_TEST_XDP_LIVE_FRAMES
from ..errors import BpfscopeError
from ..features import Feature, probe
from ..netdev import ifindex
from ..object import Object, ObjectSpec, load, tool_object
from ..program import Program, XdpMode
from ..testing import packets
from ..testing.netns import NETNS_PREFIX, VethPair
from ..tools.guard import Counts, GuardControl, Limit, limiter, load_guard
from . import Figure, Rounds
from . import rounds as median_range

__all__ = ["FLOOD_NETWORK", "TARGET", "FloodMethod", "flood_method", "run"]

TARGET = 3.0  # issue 4: guard at least 3× nftables
# RFC 2544's benchmarking range: 131,072 flood sources, none a real host's.
FLOOD_NETWORK = ipaddress.IPv4Network("198.18.0.0/15")
_SIOCETHTOOL = 0x8946  # include/uapi/linux/sockios.h
# include/uapi/linux/ethtool.h
_ETHTOOL_GSTRINGS, _ETHTOOL_GSTATS, _ETHTOOL_STSO, _ETHTOOL_SGRO, _ETHTOOL_GSSET_INFO = 0x1B, 0x1D, 0x1F, 0x2C, 0x37
_ETH_SS_STATS = 1
_ETH_GSTRING_LEN = 32
_TEST_XDP_MAX_BATCH = 256  # net/bpf/test_run.c
_SOL_PACKET, _PACKET_QDISC_BYPASS = 263, 20  # include/linux/socket.h, include/uapi/linux/if_packet.h
_UIO_MAXIOV = 1024  # the most messages one sendmmsg takes
_MAX_SENDERS = 4  # AF_PACKET sending CPUs at most
# The receiver's NAPI coalescing under the AF_PACKET flood: 256 frames (the ring) in 20 µs is 12.8 Mpps,
# more than that flood sends, so the ring does not overflow while NAPI waits.
_COALESCE_NS = 20_000
_METER_SIZE = 65_536  # elements in the nftables meter's set: as many sources as guard's LRU holds


class FloodMethod(Enum):
    LIVE_FRAMES = "XDP live frames (BPF_PROG_TEST_RUN)"
    PACKET = "AF_PACKET sendmmsg (PACKET_QDISC_BYPASS)"


def flood_method() -> FloodMethod:
    """XDP live frames where this kernel runs them (features.probe: one dropped frame, the answer
    cached), else AF_PACKET."""
    return FloodMethod.PACKET if probe(Feature.XDP_LIVE_FRAMES) else FloodMethod.LIVE_FRAMES


def _live_frames_refusal() -> Optional[str]:
    """How the kernel refused live frames (the errno's name where it refused the syscall), or None."""
    refusal = probe(Feature.XDP_LIVE_FRAMES)
    if refusal is None:
        return None
    cause = refusal.__cause__
    if isinstance(cause, OSError) and cause.errno is not None:
        return errno.errorcode.get(cause.errno, str(cause.errno))
    return str(refusal)


# --- the flood: the parent's side ---

@dataclass(frozen=True)
class _Sent:
    frames: int  # frames offered to the veth, those it refused included
    seconds: float


class _Sender:
    """One flood child in the pair's namespace: told "seconds sources", it floods and answers."""

    def __init__(self, pair: VethPair, args: Sequence[str]) -> None:
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}
        self._stderr = tempfile.TemporaryFile(mode="w+")
        code = "import sys; from bpfscope.benchmarks.guard import _sender_main; _sender_main(sys.argv[1:])"
        # VethPair.close() kills it if it is still running.
        self._proc = pair.popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env)
        self._line()  # "ready": pinned, socket or program ready

    def _line(self) -> str:
        assert self._proc.stdout is not None
        line: str = self._proc.stdout.readline()
        if not line:
            self._proc.wait()
            self._stderr.seek(0)
            lines = self._stderr.read().strip().splitlines()
            raise BpfscopeError(errno.EIO, f"flood sender failed: {lines[-1] if lines else self._proc.returncode}")
        return line

    def start(self, seconds: float, sources: int) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(f"{seconds} {sources}\n")
        self._proc.stdin.flush()

    def result(self) -> _Sent:
        answer = json.loads(self._line())
        return _Sent(int(answer["frames"]), float(answer["seconds"]))

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()  # the child's loop ends with its stdin
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._stderr.close()


class _Flood:
    """The flood generators, each pinned to one of `cpus`; together they flood from the peer end."""

    def __init__(self, pair: VethPair, method: FloodMethod, *, cpus: Sequence[int], batch_size: int,
                 repeat: int) -> None:
        self.method = method
        self.cpus = list(cpus)
        self._pair = pair
        frame = _template(pair).hex()
        self._senders: list[_Sender] = []
        try:
            if method is FloodMethod.LIVE_FRAMES:
                self.cpus = self.cpus[:1]  # one test_run loop already outruns every configuration
                args = ["live", str(self.cpus[0]), pair.peer, frame, str(batch_size), str(repeat)]
                self._senders.append(_Sender(pair, args))
            else:
                for index, cpu in enumerate(self.cpus):
                    args = ["packet", str(cpu), pair.peer, frame, str(index), str(len(self.cpus))]
                    self._senders.append(_Sender(pair, args))
        except BaseException:
            self.close()
            raise

    def send(self, seconds: float, sources: int) -> _Sent:
        """Floods for about `seconds` from `sources` addresses; frames offered and the time taken."""
        for sender in self._senders:
            sender.start(seconds, sources)
        sent = [sender.result() for sender in self._senders]
        return _Sent(sum(s.frames for s in sent), max(s.seconds for s in sent))

    def refused(self, receiver: _Receiver) -> int:
        """Frames the receiver's full ring has refused so far. Live frames: in the receiver's rx_dropped
        (the sending end's tx_dropped reports the same frames again). AF_PACKET: in the sending end's
        tx_dropped; the receiver counts none of them."""
        if self.method is FloodMethod.LIVE_FRAMES:
            return receiver.stat("rx_dropped")
        return _peer_tx_dropped(self._pair)

    def close(self) -> None:
        for sender in self._senders:
            sender.close()
        self._senders.clear()


def _template(pair: VethPair) -> bytes:
    """The flood's 60-byte frame from FLOOD_NETWORK's first address, with no UDP checksum (0: legal
    for IPv4), so that only the IP header checksum changes with the source."""
    frame = packets.udp_frame(src_mac=pair.peer_mac, dst_mac=pair.host_mac,
                              src_ip=str(FLOOD_NETWORK.network_address), dst_ip=pair.host_ip,
                              sport=40000, dport=9, payload=bytes(18))
    return frame[:40] + bytes(2) + frame[42:]


def _frames_from(template: bytes, sources: int) -> np.ndarray[Any, Any]:
    """`sources` copies of an Ethernet + IPv4 frame (uint8, one row each), row i from the template's
    source address + i, its IP header checksum made right."""
    rows = np.tile(np.frombuffer(template, dtype=np.uint8), (sources, 1))
    addresses = np.uint32(int.from_bytes(template[26:30], "big")) + np.arange(sources, dtype=np.uint32)
    words = np.frombuffer(template[14:34], dtype=">u2").astype(np.uint32)
    rest = int(words.sum() - words[5] - words[6] - words[7])  # everything but the checksum and the source
    total = rest + (addresses >> 16) + (addresses & 0xFFFF)
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    rows[:, 26:30] = addresses.astype(">u4").view(np.uint8).reshape(sources, 4)
    rows[:, 24:26] = (~total & 0xFFFF).astype(">u2").view(np.uint8).reshape(sources, 2)
    return rows


# --- the flood: the children's side ---

class _LiveFramesLoop:
    """test_run calls of send_flood with live frames: each XDP_TX leaves `iface`."""

    def __init__(self, iface: str, frame: bytes, *, batch_size: int, repeat: int) -> None:
        self.frame = frame
        self.batch_size = batch_size
        self.repeat = repeat
        self.ctx = struct.pack("=6I", 0, len(frame), 0, ifindex(iface), 0, 0)  # struct xdp_md
        self._objects: dict[int, Object] = {}  # by source count, a frozen .rodata knob; closed at exit

    def _program(self, sources: int) -> Program:
        if sources not in self._objects:
            self._objects[sources] = load(tool_object("guard_bench"), cfg_sources=sources,
                                          cfg_source_base=int(FLOOD_NETWORK.network_address))
        return self._objects[sources].programs["send_flood"]

    def flood(self, seconds: float, sources: int) -> int:
        program = self._program(sources)
        repeat = min(self.repeat, max(10_000, int(seconds * 2e6)))
        frames, start = 0, time.monotonic()
        while frames == 0 or time.monotonic() - start < seconds:
            program.test_run(self.frame, repeat=repeat, flags=BPF_F_TEST_XDP_LIVE_FRAMES,
                             batch_size=self.batch_size, ctx=self.ctx)
            frames += repeat
        return frames


class _Msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.c_void_p),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("len", ctypes.c_uint)]


class _PacketLoop:
    """sendmmsg of precomputed frames on a packet socket bound to `iface`, past its qdisc. Sender
    `index` of `count` starts its turn through the sources that far in, so together they spread."""

    def __init__(self, iface: str, template: bytes, *, index: int, count: int) -> None:
        self.template = template
        self.start_share = index / count
        if index == 0:
            # With TSO on the sending end the receiving veth takes our skbs as not for GRO and
            # gives them to the stack on this CPU: no NAPI, nothing to measure.
            _ethtool_set(iface, _ETHTOOL_STSO, 0)
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: never receives
        self.sock.bind((iface, 0))
        self.sock.setsockopt(_SOL_PACKET, _PACKET_QDISC_BYPASS, 1)
        libc = ctypes.CDLL(None, use_errno=True)
        self.sendmmsg = libc.sendmmsg
        self.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
        self.sendmmsg.restype = ctypes.c_int
        self._batches: dict[int, tuple[np.ndarray[Any, Any], ...]] = {}  # by source count: frames, iovecs, messages

    def _messages(self, sources: int) -> int:
        """The address of `sources` + _UIO_MAXIOV messages, message i for frame i % sources, so any
        _UIO_MAXIOV in a row from below `sources` are one sendmmsg."""
        if sources not in self._batches:
            frames = _frames_from(self.template, sources)
            count = sources + _UIO_MAXIOV
            rows = np.arange(count) % sources
            iovecs = np.zeros(count, dtype=[("base", np.uintp), ("len", np.uintp)])  # struct iovec
            iovecs["base"] = frames.ctypes.data + rows * frames.shape[1]
            iovecs["len"] = frames.shape[1]
            messages = np.zeros(count, dtype=np.dtype({  # struct mmsghdr, the fields we set
                "names": ["iov", "iovlen"], "formats": [np.uintp, np.uintp],
                "offsets": [_Msghdr.iov.offset, _Msghdr.iovlen.offset], "itemsize": ctypes.sizeof(_Mmsghdr)}))
            messages["iov"] = iovecs.ctypes.data + np.arange(count) * iovecs.itemsize
            messages["iovlen"] = 1
            self._batches[sources] = (frames, iovecs, messages)
        return int(self._batches[sources][2].ctypes.data)

    def flood(self, seconds: float, sources: int) -> int:
        messages, size, fd = self._messages(sources), ctypes.sizeof(_Mmsghdr), self.sock.fileno()
        position = int(self.start_share * sources)
        frames, start = 0, time.monotonic()
        while frames == 0 or time.monotonic() - start < seconds:
            sent = self.sendmmsg(fd, messages + position * size, _UIO_MAXIOV, 0)
            if sent < 0:
                err = ctypes.get_errno()
                if err != errno.ENOBUFS:
                    raise OSError(err, f"sendmmsg: {os.strerror(err)}")
                sent = 0
            if sent < _UIO_MAXIOV:
                # The veth's ring was full: it dropped (counting it in its tx_dropped) the frame
                # that stopped the call. That frame was offered; it goes again next call.
                frames += 1
            frames += sent
            position = (position + sent) % sources
        return frames


def _sender_main(argv: list[str]) -> None:
    """A flood child, in the pair's namespace: `live CPU IFACE FRAME BATCH REPEAT` or
    `packet CPU IFACE FRAME INDEX COUNT`. Reads "seconds sources" lines, floods that long from
    that many sources, answers each with a JSON line; ends when its stdin closes."""
    kind, cpu, iface, frame = argv[0], int(argv[1]), argv[2], bytes.fromhex(argv[3])
    os.sched_setaffinity(0, {cpu})
    loop: _LiveFramesLoop | _PacketLoop
    if kind == "live":
        loop = _LiveFramesLoop(iface, frame, batch_size=int(argv[4]), repeat=int(argv[5]))
    else:
        loop = _PacketLoop(iface, frame, index=int(argv[4]), count=int(argv[5]))
    print("ready", flush=True)
    for line in sys.stdin:
        seconds, sources = float(line.split()[0]), int(line.split()[1])
        start = time.monotonic()
        frames = loop.flood(seconds, sources)
        print(json.dumps({"frames": frames, "seconds": time.monotonic() - start}), flush=True)


# --- the receiver ---

class _Receiver:
    """The root-namespace end: GRO on (so the veth has NAPI without XDP), NAPI threaded, its thread
    pinned to `cpu`; what it has received, and what its NAPI thread has run."""

    def __init__(self, iface: str, *, cpu: int, coalesce_ns: int = 0) -> None:
        self.iface = iface
        self.cpu = cpu
        _ethtool_set(iface, _ETHTOOL_SGRO, 1)
        self._write("threaded", 1)
        if coalesce_ns:
            # The kernel's interrupt moderation for NAPI: once the ring is empty, poll again after
            # gro_flush_timeout instead of waking for the next frame, up to napi_defer_hard_irqs times.
            self._write("napi_defer_hard_irqs", 100)
            self._write("gro_flush_timeout", coalesce_ns)
        self.napi_pid = self._napi_thread()
        os.sched_setaffinity(self.napi_pid, {cpu})

    def _write(self, knob: str, value: int) -> None:
        try:
            Path(f"/sys/class/net/{self.iface}/{knob}").write_text(str(value))
        except OSError as exc:
            raise BpfscopeError(exc.errno or errno.EIO, f"{knob} on {self.iface}: {exc.strerror}") from None

    def _napi_thread(self) -> int:
        # The kernel names it napi/<iface>-<napi id>; /proc/<pid>/comm may cut that at 15 characters.
        prefix = f"napi/{self.iface}-"[:15]
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    comm = Path(f"/proc/{entry}/comm").read_text().strip()
                except OSError:
                    continue
                if comm.startswith(prefix):
                    found.append(int(entry))
        if len(found) != 1:
            raise BpfscopeError(errno.ESRCH, f"expected one NAPI thread for {self.iface}, found {len(found)}")
        return found[0]

    def napi_ns(self) -> int:
        """The NAPI thread's sum_exec_runtime (/proc/<pid>/schedstat), in ns."""
        return int(Path(f"/proc/{self.napi_pid}/schedstat").read_text().split()[0])

    def stat(self, name: str) -> int:
        return int(Path(f"/sys/class/net/{self.iface}/statistics/{name}").read_text())

    def xdp_drops(self) -> Optional[int]:
        """What the veth's native XDP dropped, over its receive queues (ethtool -S rx_queue_N_xdp_drops);
        None where the driver keeps no such counter."""
        drops = [v for k, v in _ethtool_stats(self.iface).items() if k.startswith("rx_queue_")
                 and k.endswith("_xdp_drops")]
        return sum(drops) if drops else None

    def cpu_times(self) -> tuple[int, int, int]:
        """Steal, idle (iowait too) and total jiffies of the receiver's CPU (/proc/stat)."""
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith(f"cpu{self.cpu} "):
                    fields = [int(v) for v in line.split()[1:]]
                    return fields[7], fields[3] + fields[4], sum(fields[:8])
        raise BpfscopeError(errno.ENOENT, f"cpu{self.cpu} not in /proc/stat")


def _ethtool(iface: str, request: bytes) -> array.array[int]:
    """One SIOCETHTOOL request (its struct as bytes); the struct as the kernel left it."""
    buffer = array.array("B", request)
    ifreq = struct.pack("16sP", iface.encode(), buffer.buffer_info()[0])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock, _SIOCETHTOOL, ifreq)
    return buffer


def _ethtool_set(iface: str, command: int, value: int) -> None:
    """ETHTOOL_S*: GRO is what gives a veth NAPI while it has no XDP program; TSO on a sending veth
    keeps its skbs from that NAPI."""
    try:
        _ethtool(iface, struct.pack("=II", command, value))  # struct ethtool_value
    except OSError as exc:
        raise BpfscopeError(exc.errno or errno.EIO,
                            f"ethtool request {command:#x} on {iface}: {exc.strerror}") from None


def _ethtool_stats(iface: str) -> dict[str, int]:
    """The driver's own counters (ethtool -S): ETHTOOL_GSSET_INFO, ETHTOOL_GSTRINGS, ETHTOOL_GSTATS."""
    info = _ethtool(iface, struct.pack("=IIQI", _ETHTOOL_GSSET_INFO, 0, 1 << _ETH_SS_STATS, 0))
    count = struct.unpack_from("=I", info, 16)[0]
    strings = _ethtool(iface, struct.pack("=III", _ETHTOOL_GSTRINGS, _ETH_SS_STATS, count)
                       + bytes(_ETH_GSTRING_LEN * count))
    names = [strings[12 + _ETH_GSTRING_LEN * i: 12 + _ETH_GSTRING_LEN * (i + 1)].tobytes().rstrip(b"\0").decode()
             for i in range(count)]
    values = _ethtool(iface, struct.pack("=II", _ETHTOOL_GSTATS, count) + bytes(8 * count))
    return dict(zip(names, struct.unpack_from(f"={count}Q", values, 8)))


def _peer_tx_dropped(pair: VethPair) -> int:
    """What the sending end dropped because the receiver's ring was full (AF_PACKET floods)."""
    done = subprocess.run(["ip", "-n", pair.ns, "-j", "-s", "link", "show", "dev", pair.peer],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise BpfscopeError(errno.EIO, f"ip link show {pair.peer}: {done.stderr.strip()}")
    return int(json.loads(done.stdout)[0]["stats64"]["tx"]["dropped"])


# --- the configurations: each sets itself up on the receiver and yields its counts ---

@dataclass(frozen=True)
class _Counts:
    dropped: int
    seen: Optional[int] = None  # guard: passed + dropped, every packet its program ran for


Counter = Callable[[], _Counts]


@contextmanager
def _guard(iface: str, limit: Limit, mode: XdpMode, modes: list[XdpMode], *,
           deny: Sequence[ipaddress.IPv4Network] = (),
           allow: Sequence[ipaddress.IPv4Network] = ()) -> Iterator[Counter]:
    """Guard as `bpfscope guard` runs it, its lists filled the way `bpfscope guard deny|allow` does."""
    with load_guard(limit) as obj:
        control = GuardControl(obj.maps)
        for network in deny:
            control.add("deny", network)
        for network in allow:
            control.add("allow", network)
        with limiter(obj).attach_xdp(iface, mode=mode) as link:
            modes.append(link.mode)

            def counts() -> _Counts:
                total: Counts = control.snapshot().counts
                return _Counts(total.dropped, total.passed + total.dropped)

            yield counts


@contextmanager
def _xdp_floor(receiver: _Receiver, mode: XdpMode) -> Iterator[Counter]:
    with load(tool_object("guard_bench")) as obj, obj.programs["drop_packets"].attach_xdp(receiver.iface, mode=mode):
        yield lambda: _Counts(receiver.stat("rx_packets"))  # it drops every packet it sees


@contextmanager
def _nft_chain(table: str, iface: str, rules: Sequence[str], sets: str = "") -> Iterator[Counter]:
    """A netdev table (with `sets`) with one ingress chain on `iface` holding `rules`, deleted on exit."""
    _nft(f"table netdev {table} {{\n{sets}"
         f'  chain ingress {{ type filter hook ingress device "{iface}" priority 0; policy accept;\n'
         + "".join(f"    {rule}\n" for rule in rules)
         + "  }\n}\n")
    try:
        yield lambda: _Counts(_nft_dropped(table))
    finally:
        _nft(f"delete table netdev {table}")


def _nft(script: str) -> None:
    done = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise BpfscopeError(errno.EIO, f"nft: {lines[0] if lines else done.returncode}")


def _nft_dropped(table: str) -> int:
    """The packets counted by the `counter`s of the chain's rules (all of them drop). The chain, not
    the table: a table's listing holds every element of its sets and meters."""
    done = subprocess.run(["nft", "-j", "list", "chain", "netdev", table, "ingress"], capture_output=True, text=True)
    if done.returncode != 0:
        raise BpfscopeError(errno.EIO, f"nft list chain netdev {table} ingress: {done.stderr.strip()}")
    return sum(expr["counter"]["packets"]
               for item in json.loads(done.stdout)["nftables"] if "rule" in item
               for expr in item["rule"]["expr"] if "counter" in expr)


def _nft_interval_set(name: str, networks: Sequence[ipaddress.IPv4Network]) -> str:
    return f"  set {name} {{ type ipv4_addr; flags interval; elements = {{ {', '.join(map(str, networks))} }} }}\n"


def _guard_lru() -> int:
    """How many sources guard keeps state for: max_entries of its LRU `sources` map."""
    spec = ObjectSpec.open(tool_object("guard"))
    try:
        return spec.maps["sources"].max_entries
    finally:
        spec.close()


def _prefixes(count: int, *, seed: int = 14) -> list[ipaddress.IPv4Network]:
    """`count` IPv4 prefixes, /16 to /32 and the same on every run, none overlapping another or the
    flood: each in a /16 of its own, outside 0/8, 10/8 (the pair's), 127/8, the flood's /15 and 224/3."""
    reserved = {0, 10, 127}
    flood = {int(FLOOD_NETWORK.network_address) >> 16 | i for i in range(FLOOD_NETWORK.num_addresses >> 16)}
    blocks = [b for b in range(224 << 8) if b >> 8 not in reserved and b not in flood]
    if count > len(blocks):
        raise BpfscopeError(errno.EINVAL, f"{count:,} prefixes is more than {len(blocks):,} /16 blocks hold")
    rng = random.Random(seed)
    return [ipaddress.IPv4Network(((block << 16) | rng.getrandbits(16), rng.randint(16, 32)), strict=False)
            for block in rng.sample(blocks, count)]


# --- measuring ---

@dataclass(frozen=True)
class _Reading:
    counts: _Counts
    napi_ns: int
    rx_packets: int
    refused: int  # _Flood.refused
    xdp_drops: Optional[int]
    cpu_times: tuple[int, int, int]

    @classmethod
    def take(cls, receiver: _Receiver, flood: _Flood, counter: Counter) -> _Reading:
        return cls(counter(), receiver.napi_ns(), receiver.stat("rx_packets"), flood.refused(receiver),
                   receiver.xdp_drops(), receiver.cpu_times())


@dataclass(frozen=True)
class _Sample:
    dropped: int  # by the configuration's own count
    seen: Optional[int]  # guard: passed + dropped
    received: int  # the receiver's rx_packets: every frame its NAPI took from the ring
    xdp_drops: Optional[int]  # the veth's count of its native XDP program's drops, where it keeps one
    cpu_ns: int  # the receiver's NAPI thread
    seconds: float  # the flood's wall time
    offered: int  # frames the flood offered
    refused: int  # frames the full ring refused
    steal: float  # share of the receiver CPU's time the hypervisor took
    other: float  # share of the receiver CPU's time spent on anything but its NAPI thread

    @property
    def ns_per_drop(self) -> float:
        return self.cpu_ns / self.dropped if self.dropped else float("inf")

    @property
    def ns_per_packet(self) -> float:
        return self.cpu_ns / self.received if self.received else float("inf")

    @property
    def mpps(self) -> float:
        return self.dropped / self.seconds / 1e6

    @property
    def dropped_share(self) -> float:
        return self.dropped / self.received if self.received else 0.0


def _measure(flood: _Flood, receiver: _Receiver, counter: Counter, *, seconds: float, sources: int) -> _Sample:
    """One flood of about `seconds` into the receiver as it stands; every count taken with no flood."""
    before = _Reading.take(receiver, flood, counter)
    sent = flood.send(seconds, sources)
    # The ring refuses within the sender's own call, so what it refused is known now; the receiver may
    # still be taking the last frames off the ring (up to 256, more slowly on a busy CPU): wait for them.
    # rx_packets counts a NAPI poll's frames after the poll has run each, so the counts are final then.
    expected = before.rx_packets + sent.frames - (flood.refused(receiver) - before.refused)
    deadline = time.monotonic() + 1.0
    while receiver.stat("rx_packets") < expected and time.monotonic() < deadline:
        time.sleep(0.002)
    after = _Reading.take(receiver, flood, counter)
    steal, idle, total = (a - b for a, b in zip(after.cpu_times, before.cpu_times))
    napi_ns = after.napi_ns - before.napi_ns
    busy = (total - idle - steal) / total if total else 0.0
    napi = napi_ns / (total * 1e9 / os.sysconf("SC_CLK_TCK")) if total else 0.0  # /proc/stat counts in USER_HZ
    seen = None if after.counts.seen is None or before.counts.seen is None else after.counts.seen - before.counts.seen
    sample = _Sample(dropped=after.counts.dropped - before.counts.dropped, seen=seen,
                     received=after.rx_packets - before.rx_packets,
                     xdp_drops=None if after.xdp_drops is None or before.xdp_drops is None
                     else after.xdp_drops - before.xdp_drops,
                     cpu_ns=napi_ns, seconds=sent.seconds, offered=sent.frames,
                     refused=after.refused - before.refused, steal=steal / total if total else 0.0,
                     other=max(0.0, busy - napi))
    if sample.received and sample.cpu_ns < 10 * sample.received:
        raise BpfscopeError(errno.EIO, f"the receiver's NAPI thread ran {sample.cpu_ns / sample.received:.1f} ns "
                                       f"per packet: the packets did not come through it")
    return sample


def _check_counts(sample: _Sample, mode: XdpMode) -> None:
    """Guard's own counts against the veth's: every packet the veth took from its ring went through
    guard, and under native XDP the veth counted guard's drops as its XDP program's."""
    if sample.seen != sample.received:
        raise BpfscopeError(errno.EIO, f"guard saw {sample.seen:,} packets, the veth received {sample.received:,}")
    expected = sample.dropped if mode is XdpMode.NATIVE else 0  # generic XDP drops: no veth counter
    if sample.xdp_drops is not None and sample.xdp_drops != expected:
        raise BpfscopeError(errno.EIO, f"guard dropped {sample.dropped:,} packets in {mode.value} XDP, the veth "
                                       f"counted {sample.xdp_drops:,} XDP drops")


@dataclass(frozen=True)
class _Config:
    make: Callable[[], AbstractContextManager[Counter]]
    sources: int
    drops: bool = True  # most of what arrives must be dropped, or nothing would be measured
    guard: bool = False  # guard's counts are checked against the veth's


def run(
    *, seconds: float = 1.5, rounds: int = 5, warmup: float = 0.5, rate: int = 1000, burst: int = 200,
    sources: int = 4, listed: int = 10_000, many_sources: int = 100_000, many_rate: int = 1, many_burst: int = 1,
    repeat: int = 500_000, batch_size: int = _TEST_XDP_MAX_BATCH, mode: XdpMode = XdpMode.AUTO,
    method: Optional[FloodMethod] = None,
) -> list[Figure]:
    """Floods `seconds` into each configuration per round, `rounds` rounds after a `warmup` round
    (not counted; 0 for none), the order rotating each round. The flood comes from `sources` hosts,
    each far over the limit of `rate` packets/s with `burst`; populated lists hold `listed` deny and
    `listed` allow prefixes; the many-sources flood comes from `many_sources` hosts, limited to
    `many_rate`/s with `many_burst` so each is over it. `method` None probes for live frames;
    those send `repeat` frames per test_run call in batches of `batch_size` (at most 256)."""
    if shutil.which("nft") is None:
        raise BpfscopeError(errno.ENOENT, "nft is not installed: it is the reference this benchmark compares with")
    if rounds < 1:
        raise BpfscopeError(errno.EINVAL, f"rounds {rounds} is out of range (at least 1)")
    for name, count in (("sources", sources), ("many_sources", many_sources)):
        if not 1 <= count <= FLOOD_NETWORK.num_addresses:
            raise BpfscopeError(errno.EINVAL, f"{name} {count} is out of range (1 to {FLOOD_NETWORK.num_addresses:,})")
    method = method or flood_method()
    limit, many_limit = Limit(rate, burst), Limit(many_rate, many_burst)
    networks = _prefixes(2 * listed)
    deny, allow = networks[:listed], networks[listed:]
    cpus = sorted(os.sched_getaffinity(0))
    receiver_cpu = cpus[-1]
    sender_cpus = cpus[:-1][:_MAX_SENDERS] or cpus[:1]
    affinity = os.sched_getaffinity(0)
    modes: list[XdpMode] = []
    samples: dict[str, list[_Sample]] = {}
    with VethPair() as pair:
        table = "bpfscope_bench_guard_" + pair.ns[len(NETNS_PREFIX):]  # this run's own: deleted by name
        try:
            os.sched_setaffinity(0, sender_cpus[:1])  # this process sleeps while it floods: not on the receiver's CPU
            receiver = _Receiver(pair.host, cpu=receiver_cpu,
                                 coalesce_ns=_COALESCE_NS if method is FloodMethod.PACKET else 0)
            flood = _Flood(pair, method, cpus=sender_cpus, batch_size=batch_size, repeat=repeat)
            try:
                def xdp_mode() -> XdpMode:
                    return modes[0] if modes else mode

                def meter(per_source: Limit) -> str:
                    return (f"meter sources size {_METER_SIZE} {{ ip saddr limit rate over {per_source.rate}/second "
                            f"burst {per_source.burst} packets }} counter drop")

                sets = _nft_interval_set("deny", deny) + _nft_interval_set("allow", allow)
                configs: dict[str, _Config] = {
                    "guard": _Config(lambda: _guard(pair.host, limit, xdp_mode(), modes), sources, guard=True),
                    "meter": _Config(lambda: _nft_chain(table, pair.host, [meter(limit)]), sources),
                    "drop": _Config(lambda: _nft_chain(table, pair.host, [f"ip saddr {FLOOD_NETWORK} counter drop"]),
                                    sources),
                    "floor": _Config(lambda: _xdp_floor(receiver, xdp_mode()), sources),
                    "guard_lists": _Config(lambda: _guard(pair.host, limit, xdp_mode(), modes, deny=deny, allow=allow),
                                           sources, guard=True),
                    "meter_sets": _Config(lambda: _nft_chain(table, pair.host, [
                        "ip saddr @deny counter drop", "ip saddr @allow accept", meter(limit)], sets), sources),
                    "guard_many": _Config(lambda: _guard(pair.host, many_limit, xdp_mode(), modes), many_sources,
                                          drops=False, guard=True),
                    "meter_many": _Config(lambda: _nft_chain(table, pair.host, [meter(many_limit)]), many_sources,
                                          drops=False),
                }
                names = list(configs)
                plan = [(warmup, False)] * (warmup > 0) + [(seconds, True)] * rounds
                for index, (duration, counted) in enumerate(plan):
                    order = names[index % len(names):] + names[:index % len(names)]
                    for name in order:
                        config = configs[name]
                        with config.make() as counter:
                            sample = _measure(flood, receiver, counter, seconds=duration,
                                              sources=config.sources)
                        if config.drops and sample.dropped < sample.received // 2:
                            raise BpfscopeError(errno.EIO, f"{name}: only {sample.dropped:,} of {sample.received:,} "
                                                           "packets received were dropped: the flood was too slow "
                                                           "to go over the limit (is the machine busy?)")
                        if config.guard:
                            _check_counts(sample, xdp_mode())
                        if counted:
                            samples.setdefault(name, []).append(sample)
            finally:
                flood.close()
        finally:
            os.sched_setaffinity(0, affinity)
            subprocess.run(["nft", "delete", "table", "netdev", table], capture_output=True)  # if left half-made
    return _figures(samples, _Setup(mode=modes[0], method=method, sender_cpus=flood.cpus, receiver_cpu=receiver_cpu,
                                    seconds=seconds, rounds=rounds, limit=limit, sources=sources, listed=listed,
                                    many_sources=many_sources, many_limit=many_limit,
                                    batch_size=batch_size))


@dataclass(frozen=True)
class _Setup:
    mode: XdpMode
    method: FloodMethod
    sender_cpus: list[int]
    receiver_cpu: int
    seconds: float
    rounds: int
    limit: Limit
    sources: int
    listed: int
    many_sources: int
    many_limit: Limit
    batch_size: int


def _figure(name: str, unit: str, higher_is_better: bool, ours: list[float], reference: Optional[str] = None,
            theirs: Optional[list[float]] = None, *, target: Optional[float] = None, note: str = "") -> Figure:
    """A figure as the median of its rounds with their range, and so its reference, if any."""
    value, spread = median_range(ours)
    reference_value: Optional[float] = None
    reference_spread: Optional[Rounds] = None
    if theirs is not None:
        reference_value, reference_spread = median_range(theirs)
    return Figure("guard", name, value, unit, higher_is_better, target=target, reference=reference,
                  reference_value=reference_value, note=note, spread=spread, reference_spread=reference_spread)


def _figures(samples: dict[str, list[_Sample]], setup: _Setup) -> list[Figure]:
    mode = setup.mode.value
    label = {
        "guard": f"guard (XDP {mode})",
        "meter": "nftables per-source meter (netdev ingress)",
        "drop": "nftables plain drop (netdev ingress)",
        "floor": f"empty XDP_DROP program (XDP {mode})",
        "guard_lists": f"guard, {setup.listed:,} deny + {setup.listed:,} allow prefixes (XDP {mode})",
        "meter_sets": "nftables meter, the same prefixes in two interval sets",
        "guard_many": f"guard, {setup.many_sources:,} sources (XDP {mode})",
        "meter_many": f"nftables meter, {setup.many_sources:,} sources",
    }
    short = {"guard": "guard", "meter": "meter", "drop": "plain drop", "floor": "empty program",
             "guard_lists": "guard with lists", "meter_sets": "meter with sets",
             "guard_many": f"guard, {setup.many_sources:,} sources",
             "meter_many": f"meter, {setup.many_sources:,} sources"}
    every = [s for v in samples.values() for s in v]
    busy = {short[k]: median_range(s.cpu_ns / 1e9 / s.seconds for s in v)[0] for k, v in samples.items()}
    refused = {short[k]: median_range(s.refused / (s.received + s.refused) for s in v)[0] for k, v in samples.items()}
    steal = max(s.steal for s in every)
    other = max(s.other for s in every)
    packet = (" Under the AF_PACKET flood every XDP configuration, the empty program too, pays the veth's copy "
              "of each skb into a page before XDP runs, and the receiver coalesces (napi_defer_hard_irqs 100, "
              f"gro_flush_timeout {_COALESCE_NS // 1000} µs) as a NIC's interrupt moderation would."
              if setup.method is FloodMethod.PACKET else "")
    how_cost = (f"receiver's NAPI thread CPU time (schedstat, pinned to CPU {setup.receiver_cpu}) / packets dropped; "
                f"median of {setup.rounds} rounds of {setup.seconds:g} s (range beside it), configurations "
                "interleaved; NAPI thread busy " + ", ".join(f"{k} {100 * b:.0f} %" for k, b in busy.items())
                + f" of wall time; on CPU {setup.receiver_cpu}, other work up to {100 * other:.0f} % and steal up to "
                f"{100 * steal:.0f} % of its time.{packet}")
    how_rate = (f"packets dropped / flood wall time, median of {setup.rounds} rounds. Where the flood offers more "
                "than the receiver takes, the full veth ring (256 frames) refuses the rest, and the rate is the "
                "receiver's capacity on one CPU; where the ring refused next to nothing, the flood set the rate. "
                "Share refused: "
                + ", ".join(f"{k} {100 * r:.0f} %" for k, r in refused.items()))
    limits = (f"guard and meter both limit each source to {setup.limit.rate:,}/s, burst {setup.limit.burst}; "
              f"the flood comes from {setup.sources} sources")
    lists = (f"{setup.listed:,} deny and {setup.listed:,} allow prefixes (/16 to /32, none matching the flood) in "
             "guard's two LPM tries, added as `bpfscope guard deny|allow` adds them, and in two nft interval sets "
             "checked before the meter (deny: drop, allow: accept); " + limits)
    per_source = median_range(s.offered / s.seconds / setup.many_sources
                              for s in samples["guard_many"] + samples["meter_many"])[0]
    over = (", so each is over its limit" if per_source > setup.many_limit.rate
            else ": this flood was too slow to be over it")
    many = (f"{setup.many_sources:,} sources in turn (each back after {setup.many_sources - 1:,} others: an LRU's "
            f"worst order), about {per_source:,.1f} packets/s each, limited to {setup.many_limit.rate}/s, burst "
            f"{setup.many_limit.burst}{over}. Guard keeps per-source state in an LRU hash of "
            f"{_guard_lru():,} entries: where the sources outnumber it, a source's state is gone before it comes "
            "back, and its packet starts a fresh bucket, which passes it. The meter's set holds "
            f"{_METER_SIZE:,} and then takes no more (a source it cannot add, it passes). Cost: NAPI CPU time / "
            f"packets received (dropped, or passed up to the stack), median of {setup.rounds} rounds")

    def per_round(key: str, of: Callable[[_Sample], float]) -> list[float]:
        return [of(s) for s in samples[key]]

    def ratios(top: str, bottom: str, of: Callable[[_Sample], float]) -> list[float]:
        return [of(t) / of(b) for t, b in zip(samples[top], samples[bottom])]

    figures: list[Figure] = []
    for key, ref in (("guard", "meter"), ("meter", "drop"), ("drop", "guard"), ("floor", "guard")):
        figures.append(_figure(f"{label[key]}: cost per dropped packet", "ns/packet", False,
                               per_round(key, lambda s: s.ns_per_drop), label[ref],
                               per_round(ref, lambda s: s.ns_per_drop), note=how_cost))
    for key, ref in (("guard", "meter"), ("meter", "drop"), ("drop", "guard"), ("floor", "guard")):
        figures.append(_figure(f"{label[key]}: drop rate", "Mpps", True, per_round(key, lambda s: s.mpps),
                               label[ref], per_round(ref, lambda s: s.mpps), note=how_rate))
    for ref in ("meter", "drop"):
        nft = "nftables meter" if ref == "meter" else "nftables plain drop"
        note = f"within each round, then the median (range beside it); {limits}"
        figures += [
            _figure(f"guard vs {nft}: cost per drop, nft ÷ guard", "×", True,
                    ratios(ref, "guard", lambda s: s.ns_per_drop), target=TARGET, note=note),
            _figure(f"guard vs {nft}: drop rate, guard ÷ nft", "×", True,
                    ratios("guard", ref, lambda s: s.mpps), target=TARGET, note=note),
        ]
    figures += [
        _figure(f"{label['guard_lists']}: cost per dropped packet", "ns/packet", False,
                per_round("guard_lists", lambda s: s.ns_per_drop), label["meter_sets"],
                per_round("meter_sets", lambda s: s.ns_per_drop), note=lists),
        _figure(f"{label['guard_lists']}: drop rate", "Mpps", True, per_round("guard_lists", lambda s: s.mpps),
                label["meter_sets"], per_round("meter_sets", lambda s: s.mpps), note=lists),
        _figure("guard vs nftables, populated lists: cost per drop, nft ÷ guard", "×", True,
                ratios("meter_sets", "guard_lists", lambda s: s.ns_per_drop), note=lists),
        _figure("guard vs nftables, populated lists: drop rate, guard ÷ nft", "×", True,
                ratios("guard_lists", "meter_sets", lambda s: s.mpps), note=lists),
        _figure(f"{label['guard_many']}: cost per packet received", "ns/packet", False,
                per_round("guard_many", lambda s: s.ns_per_packet), label["meter_many"],
                per_round("meter_many", lambda s: s.ns_per_packet), note=many),
        _figure(f"{label['guard_many']}: share dropped", "%", True,
                per_round("guard_many", lambda s: 100 * s.dropped_share), label["meter_many"],
                per_round("meter_many", lambda s: 100 * s.dropped_share), note=many),
        _figure(f"guard vs nftables, {setup.many_sources:,} sources: cost per packet, nft ÷ guard", "×", True,
                ratios("meter_many", "guard_many", lambda s: s.ns_per_packet), note=many),
    ]
    checked = [s for k in ("guard", "guard_lists", "guard_many") for s in samples[k]]
    if setup.mode is not XdpMode.NATIVE:
        drops = "; generic XDP's drops are in no veth counter"
    elif any(s.xdp_drops is None for s in checked):
        drops = "; this veth keeps no count of XDP drops"
    else:
        drops = f"; dropped = the veth's rx_queue_*_xdp_drops (ethtool -S) ({sum(s.dropped for s in checked):,})"
    senders = (f"{len(setup.sender_cpus)} sender{'s' * (len(setup.sender_cpus) > 1)} on CPU "
               + ", ".join(map(str, setup.sender_cpus)))
    refusal = _live_frames_refusal()
    how = (f"test_run batches of {setup.batch_size}, XDP_TX from the peer veth"
           if setup.method is FloodMethod.LIVE_FRAMES
           else f"precomputed frames, {_UIO_MAXIOV} per call, from the peer veth"
           + (f" (XDP live frames refused: {refusal})" if refusal else ""))
    figures.append(_figure(
        f"flood sent: {setup.method.value}", "Mpps", True, [s.offered / s.seconds / 1e6 for s in every],
        "arriving at the receiver (received + refused by the full ring)",
        [(s.received + s.refused) / s.seconds / 1e6 for s in every],
        note=f"60-byte UDP frames, {senders}, {how}; median over every flood. Guard's own counts against the "
             f"receiving veth's, in all {len(checked)} floods into guard: passed + dropped = rx_packets "
             f"({sum(s.received for s in checked):,} packets){drops}. Frames offered and not received or refused, "
             f"all floods: {sum(s.offered - s.received - s.refused for s in every):,}"))
    return figures
