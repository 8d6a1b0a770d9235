"""`bpfscope bench guard`: what bpfscope guard costs per dropped packet, and how many packets a second
it drops, beside nftables doing the same per-source limit (`meter ... limit rate over`) and beside a
plain nftables drop, on the same veth under the same flood, in interleaved rounds.

The world: a VethPair of its own; the receiver under test is its root-namespace end. The flood is
made in the other namespace by a child process (`ip netns exec`) that runs send_flood
(guard_bench.bpf.c) through BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES: each frame the
program returns XDP_TX for leaves the peer veth into the receiver's ring, no skb made. The sender
is pinned to one CPU, the receiver's NAPI runs threaded (/sys/class/net/<if>/threaded) in a kernel
thread pinned to the other, and GRO is switched on so the veth has NAPI even with no XDP program.
So every configuration takes one path, veth ring → NAPI poll, and differs only past it: guard (XDP
in the poll), or an skb built, GRO, the netdev ingress hook and nftables.

Cost per dropped packet is the NAPI thread's CPU time (sum_exec_runtime, /proc/<pid>/schedstat,
in ns) over the packets dropped, both counted with the flood stopped: everything the receiving
side does per packet, wherever the drop happens in it. Drop rate is dropped packets over the
flood's wall time; the flood offers more than any configuration takes, so it is the receiver's
capacity on its one CPU (what it cannot take, the full ring refuses: rx_dropped)."""

from __future__ import annotations

import array
import errno
import fcntl
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BpfscopeError
from ..object import load, tool_object
from ..program import XdpMode
from ..testing import packets
from ..testing.netns import NETNS_PREFIX, VethPair
from ..tools.guard import GuardControl, Limit, limiter, load_guard
from . import Figure

__all__ = ["run"]

TARGET = 3.0  # issue 4: guard at least 3× nftables
FLOOD_SOURCE = "198.51.100.8"  # the low three bits are the flood program's to rotate
_SIOCETHTOOL = 0x8946  # include/uapi/linux/sockios.h
_ETHTOOL_SGRO = 0x2C  # include/uapi/linux/ethtool.h
_BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1  # include/uapi/linux/bpf.h
_TEST_XDP_MAX_BATCH = 256  # net/bpf/test_run.c

# The sender: reads "seconds repeat" lines, floods for that long in test_run calls of `repeat`
# frames each, answers with one JSON line. Ends when its stdin closes.
_SENDER = """\
import json, os, struct, sys, time
from bpfscope.netdev import ifindex
from bpfscope.object import ObjectSpec, tool_object
os.sched_setaffinity(0, {int(sys.argv[1])})
iface, frame = sys.argv[2], bytes.fromhex(sys.argv[3])
sources, batch, flags = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
spec = ObjectSpec.open(tool_object("guard_bench"))
spec.rodata["cfg_sources"] = sources
obj = spec.load()
program = obj.programs["send_flood"]
ctx = struct.pack("=6I", 0, len(frame), 0, ifindex(iface), 0, 0)  # struct xdp_md: data_end, ingress_ifindex
print("ready", flush=True)
for line in sys.stdin:
    seconds, repeat = float(line.split()[0]), int(line.split()[1])
    frames, start = 0, time.monotonic()
    while frames == 0 or time.monotonic() - start < seconds:
        program.test_run(frame, repeat=repeat, flags=flags, batch_size=batch, ctx=ctx)
        frames += repeat
    print(json.dumps({"frames": frames, "seconds": time.monotonic() - start}), flush=True)
"""


@dataclass(frozen=True)
class _Sample:
    dropped: int
    cpu_ns: int  # the receiver's NAPI thread
    seconds: float  # the flood's wall time
    offered: int  # frames the sender made
    arrived: int  # receiver rx_packets + rx_dropped (the ring was full)
    refused: int  # rx_dropped: frames the full ring refused
    steal: float  # share of the receiver CPU's time the hypervisor took

    @property
    def ns_per_drop(self) -> float:
        return self.cpu_ns / self.dropped if self.dropped else float("inf")

    @property
    def mpps(self) -> float:
        return self.dropped / self.seconds / 1e6


class _Sender:
    """The flood generator: a child in the pair's namespace, sending from the peer end."""

    def __init__(self, pair: VethPair, *, cpu: int, sources: int, batch_size: int) -> None:
        frame = packets.udp_frame(src_mac=pair.peer_mac, dst_mac=pair.host_mac, src_ip=FLOOD_SOURCE,
                                  dst_ip=pair.host_ip, sport=40000, dport=9, payload=bytes(18))  # 60 bytes
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}
        self._stderr = tempfile.TemporaryFile(mode="w+")
        argv = [sys.executable, "-c", _SENDER, str(cpu), pair.peer, frame.hex(), str(sources), str(batch_size),
                str(_BPF_F_TEST_XDP_LIVE_FRAMES)]
        # VethPair.close() kills it if it is still running.
        self._proc = pair.popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                text=True, env=env)
        self._line()  # "ready": loaded and pinned

    def _line(self) -> str:
        assert self._proc.stdout is not None
        line: str = self._proc.stdout.readline()
        if not line:
            self._proc.wait()
            self._stderr.seek(0)
            lines = self._stderr.read().strip().splitlines()
            raise BpfscopeError(errno.EIO, f"flood sender failed: {lines[-1] if lines else self._proc.returncode}")
        return line

    def flood(self, seconds: float, repeat: int) -> tuple[int, float]:
        """Floods for about `seconds`, in test_run calls of `repeat` frames; frames sent, time taken."""
        assert self._proc.stdin is not None
        self._proc.stdin.write(f"{seconds} {repeat}\n")
        self._proc.stdin.flush()
        answer = json.loads(self._line())
        return int(answer["frames"]), float(answer["seconds"])

    def close(self) -> None:
        self._stderr.close()


class _Receiver:
    """The root-namespace end: GRO on (so the veth has NAPI without XDP), NAPI threaded, its thread
    pinned to `cpu`; what it has received, and what its NAPI thread has run."""

    def __init__(self, iface: str, *, cpu: int) -> None:
        self.iface = iface
        self.cpu = cpu
        _set_gro(iface)
        try:
            with open(f"/sys/class/net/{iface}/threaded", "w") as knob:
                knob.write("1")
        except OSError as exc:
            raise BpfscopeError(exc.errno or errno.EIO, f"threaded NAPI on {iface}: {exc.strerror}") from None
        self.napi_pid = self._napi_thread()
        os.sched_setaffinity(self.napi_pid, {cpu})

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

    def cpu_times(self) -> tuple[int, int]:
        """Steal and total jiffies of the receiver's CPU (/proc/stat)."""
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith(f"cpu{self.cpu} "):
                    fields = [int(v) for v in line.split()[1:]]
                    return fields[7], sum(fields[:8])
        raise BpfscopeError(errno.ENOENT, f"cpu{self.cpu} not in /proc/stat")


def _set_gro(iface: str) -> None:
    """ETHTOOL_SGRO through SIOCETHTOOL: GRO is what gives a veth NAPI while it has no XDP program."""
    value = array.array("I", [_ETHTOOL_SGRO, 1])  # struct ethtool_value
    ifreq = struct.pack("16sP", iface.encode(), value.buffer_info()[0])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock, _SIOCETHTOOL, ifreq)


# --- the configurations: each sets itself up on the receiver and yields its count of drops ---

Dropped = Callable[[], int]


@contextmanager
def _guard(iface: str, limit: Limit, mode: XdpMode, modes: list[XdpMode]) -> Iterator[Dropped]:
    with load_guard(limit) as obj, limiter(obj).attach_xdp(iface, mode=mode) as link:
        modes.append(getattr(link, "mode", mode))
        control = GuardControl(obj.maps)
        yield lambda: control.snapshot().counts.dropped


@contextmanager
def _xdp_floor(receiver: _Receiver, mode: XdpMode) -> Iterator[Dropped]:
    with load(tool_object("guard_bench")) as obj, obj.programs["drop_packets"].attach_xdp(receiver.iface, mode=mode):
        yield lambda: receiver.stat("rx_packets")  # it drops every packet it sees


@contextmanager
def _nft_chain(table: str, iface: str, rule: str) -> Iterator[Dropped]:
    """A netdev table with one ingress chain on `iface` holding `rule`, deleted on exit."""
    _nft(f"table netdev {table} {{\n"
         f'  chain ingress {{ type filter hook ingress device "{iface}" priority 0; policy accept;\n'
         f"    {rule}\n"
         "  }\n"
         "}\n")
    try:
        yield lambda: _nft_dropped(table)
    finally:
        _nft(f"delete table netdev {table}")


def _nft(script: str) -> None:
    done = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise BpfscopeError(errno.EIO, f"nft: {lines[0] if lines else done.returncode}")


def _nft_dropped(table: str) -> int:
    """The packets counted by the `counter` of the table's rules."""
    done = subprocess.run(["nft", "-j", "list", "table", "netdev", table], capture_output=True, text=True)
    if done.returncode != 0:
        raise BpfscopeError(errno.EIO, f"nft list table netdev {table}: {done.stderr.strip()}")
    return sum(expr["counter"]["packets"]
               for item in json.loads(done.stdout)["nftables"] if "rule" in item
               for expr in item["rule"]["expr"] if "counter" in expr)


# --- measuring ---

def _measure(sender: _Sender, receiver: _Receiver, dropped: Dropped, *, seconds: float, repeat: int) -> _Sample:
    """One flood of about `seconds` into the receiver as it stands; every count taken with no flood."""
    before = (dropped(), receiver.napi_ns(), receiver.stat("rx_packets"), receiver.stat("rx_dropped"),
              receiver.cpu_times())
    offered, wall = sender.flood(seconds, repeat)
    time.sleep(0.02)  # the ring holds 256 frames: drained in well under a millisecond
    after = (dropped(), receiver.napi_ns(), receiver.stat("rx_packets"), receiver.stat("rx_dropped"),
             receiver.cpu_times())
    received = after[2] - before[2]
    steal, total = after[4][0] - before[4][0], after[4][1] - before[4][1]
    sample = _Sample(dropped=after[0] - before[0], cpu_ns=after[1] - before[1], seconds=wall, offered=offered,
                     arrived=received + after[3] - before[3], refused=after[3] - before[3],
                     steal=steal / total if total else 0.0)
    if sample.dropped < received // 2:  # the limit did not engage: nothing here would be measured
        raise BpfscopeError(errno.EIO, f"only {sample.dropped:,} of {received:,} packets received were dropped")
    return sample


def run(
    *, seconds: float = 1.5, rounds: int = 5, warmup: float = 0.5, rate: int = 1000, burst: int = 200,
    sources: int = 4, repeat: int = 500_000, batch_size: int = _TEST_XDP_MAX_BATCH, mode: XdpMode = XdpMode.AUTO,
) -> list[Figure]:
    """Floods `seconds` into each configuration per round, `rounds` rounds after a `warmup` round
    (not counted; 0 for none), the order rotating each round. The flood comes from `sources` hosts
    (1 to 8), each far over the limit of `rate` packets/s with `burst`; test_run sends `repeat`
    frames per call in batches of `batch_size` (at most 256)."""
    if shutil.which("nft") is None:
        raise BpfscopeError(errno.ENOENT, "nft is not installed: it is the reference this benchmark compares with")
    if not 1 <= sources <= 8:
        raise BpfscopeError(errno.EINVAL, f"sources {sources} is out of range (1 to 8)")
    limit = Limit(rate, burst)
    cpus = sorted(os.sched_getaffinity(0))
    sender_cpu, receiver_cpu = cpus[0], cpus[-1]
    affinity = os.sched_getaffinity(0)
    modes: list[XdpMode] = []
    samples: dict[str, list[_Sample]] = {name: [] for name in _NAMES}
    with VethPair() as pair:
        table = "bpfscope_bench_guard_" + pair.ns[len(NETNS_PREFIX):]  # this run's own: deleted by name
        try:
            os.sched_setaffinity(0, {sender_cpu})  # this process sleeps while it floods: not on the receiver's CPU
            receiver = _Receiver(pair.host, cpu=receiver_cpu)
            sender = _Sender(pair, cpu=sender_cpu, sources=sources, batch_size=batch_size)
            try:
                configs: dict[str, Callable[[], Any]] = {
                    "guard": lambda: _guard(pair.host, limit, modes[0] if modes else mode, modes),
                    "meter": lambda: _nft_chain(table, pair.host, f"meter sources size 65536 {{ ip saddr limit rate "
                                                f"over {rate}/second burst {burst} packets }} counter drop"),
                    "drop": lambda: _nft_chain(table, pair.host, f"ip saddr {FLOOD_SOURCE}/29 counter drop"),
                    "floor": lambda: _xdp_floor(receiver, modes[0] if modes else mode),
                }
                plan = [(warmup, False)] * (warmup > 0) + [(seconds, True)] * rounds
                for index, (duration, counted) in enumerate(plan):
                    order = list(configs)[index % len(configs):] + list(configs)[:index % len(configs)]
                    for name in order:
                        with configs[name]() as dropped:
                            sample = _measure(sender, receiver, dropped, seconds=duration,
                                              repeat=min(repeat, max(10_000, int(duration * 2e6))))
                        if counted:
                            samples[name].append(sample)
            finally:
                sender.close()
        finally:
            os.sched_setaffinity(0, affinity)
            subprocess.run(["nft", "delete", "table", "netdev", table], capture_output=True)  # if left half-made
    return _figures(samples, mode=modes[0], sender_cpu=sender_cpu, receiver_cpu=receiver_cpu, seconds=seconds,
                    rounds=rounds, limit=limit, sources=sources, batch_size=batch_size)


_NAMES = ("guard", "meter", "drop", "floor")


def _figures(
    samples: dict[str, list[_Sample]], *, mode: XdpMode, sender_cpu: int, receiver_cpu: int, seconds: float,
    rounds: int, limit: Limit, sources: int, batch_size: int,
) -> list[Figure]:
    label = {
        "guard": f"guard (XDP {mode.value})",
        "meter": "nftables per-source meter (netdev ingress)",
        "drop": "nftables plain drop (netdev ingress)",
        "floor": f"empty XDP_DROP program (XDP {mode.value})",
    }
    cost = {k: statistics.median(s.ns_per_drop for s in v) for k, v in samples.items()}
    drops = {k: statistics.median(s.mpps for s in v) for k, v in samples.items()}
    busy = {k: statistics.median(s.cpu_ns / 1e9 / s.seconds for s in v) for k, v in samples.items()}
    every = [s for v in samples.values() for s in v]
    steal = max(s.steal for s in every)
    offered = statistics.median(s.offered / s.seconds / 1e6 for s in every)
    arrived = statistics.median(s.arrived / s.seconds / 1e6 for s in every)

    def spread(values: list[float]) -> str:
        return f"{min(values):.2f}–{max(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"

    how_cost = (f"receiver's NAPI thread CPU time (schedstat, pinned to CPU {receiver_cpu}) / packets dropped; "
                f"median of {rounds} rounds of {seconds:g} s, configurations interleaved; NAPI thread busy "
                + ", ".join(f"{k} {100 * b:.0f} %" for k, b in busy.items())
                + f" of wall time; steal on CPU {receiver_cpu} up to {100 * steal:.0f} %")
    refused = {k: statistics.median(s.refused / s.arrived for s in v) for k, v in samples.items()}
    how_rate = (f"packets dropped / flood wall time, median of {rounds} rounds. Where the flood offers more than "
                "the receiver takes, the full veth ring (256 frames) refuses the rest, and the rate is the "
                "receiver's capacity on one CPU; share refused: "
                + ", ".join(f"{k} {100 * r:.0f} %" for k, r in refused.items()))
    limits = (f"guard and meter both limit each source to {limit.rate:,}/s, burst {limit.burst}; "
              f"the flood comes from {sources} sources")
    figures = [
        Figure("guard", f"{label['guard']}: cost per dropped packet", cost["guard"], "ns/packet", False,
               reference=label["meter"], reference_value=cost["meter"], note=how_cost),
        Figure("guard", f"{label['meter']}: cost per dropped packet", cost["meter"], "ns/packet", False,
               reference=label["drop"], reference_value=cost["drop"], note=how_cost),
        Figure("guard", f"{label['drop']}: cost per dropped packet", cost["drop"], "ns/packet", False,
               reference=label["guard"], reference_value=cost["guard"], note=how_cost),
        Figure("guard", f"{label['floor']}: cost per dropped packet", cost["floor"], "ns/packet", False,
               reference=label["guard"], reference_value=cost["guard"], note=how_cost),
        Figure("guard", f"{label['guard']}: drop rate", drops["guard"], "Mpps", True,
               reference=label["meter"], reference_value=drops["meter"], note=how_rate),
        Figure("guard", f"{label['meter']}: drop rate", drops["meter"], "Mpps", True,
               reference=label["drop"], reference_value=drops["drop"], note=how_rate),
        Figure("guard", f"{label['drop']}: drop rate", drops["drop"], "Mpps", True,
               reference=label["guard"], reference_value=drops["guard"], note=how_rate),
        Figure("guard", f"{label['floor']}: drop rate", drops["floor"], "Mpps", True,
               reference=label["guard"], reference_value=drops["guard"], note=how_rate),
    ]
    for ref in ("meter", "drop"):
        by_cost = [n.ns_per_drop / g.ns_per_drop for g, n in zip(samples["guard"], samples[ref])]
        by_rate = [g.mpps / n.mpps for g, n in zip(samples["guard"], samples[ref])]
        short = "nftables meter" if ref == "meter" else "nftables plain drop"
        figures += [
            Figure("guard", f"guard vs {short}: cost per drop, nft ÷ guard", statistics.median(by_cost), "×", True,
                   target=TARGET, note=f"within each round, then the median (rounds: {spread(by_cost)}); {limits}"),
            Figure("guard", f"guard vs {short}: drop rate, guard ÷ nft", statistics.median(by_rate), "×", True,
                   target=TARGET, note=f"within each round, then the median (rounds: {spread(by_rate)}); {limits}"),
        ]
    figures.append(Figure(
        "guard", "flood sent: XDP live frames (BPF_PROG_TEST_RUN)", offered, "Mpps", True,
        reference="arriving at the receiver (rx_packets + rx_dropped)", reference_value=arrived,
        note=f"60-byte UDP frames, XDP_TX from the peer veth on CPU {sender_cpu}, test_run batches of "
             f"{batch_size}; medians over every flood"))
    return figures
