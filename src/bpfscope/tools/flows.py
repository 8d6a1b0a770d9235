"""The tc flow tracker: loads flows.bpf.o with the map sized to `max_flows`, attaches it to ingress
and egress of one interface, and reads the whole LRU map with one batch lookup per snapshot. Every
per-flow step (CPU reduction, rates, idle expiry, top N) is a numpy operation on that batch; Python
objects are made only for the rows shown. A polling tool: the agent exports the top flows by bytes."""

from __future__ import annotations

import enum
import errno
import ipaddress
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional

import numpy as np

from .. import netdev
from ..errors import SyscallError
from ..maps import Map
from ..object import ObjectSpec, tool_object
from ..program import TcDirection, TcMode
from ._base import DURATION, IFACE, INTERVAL, JSON, NET, TC_MODE, Kind, Option, OptionValueError, Tool, positive_float

if TYPE_CHECKING:
    from prometheus_client.core import Metric

__all__ = ["Flow", "FlowSnapshot", "FlowTracker", "SortKey", "TcpFlags", "DEFAULT_MAX_FLOWS", "MAX_FLOWS_LIMIT",
           "TOOL"]

DEFAULT_MAX_FLOWS = 65_536
# An LRU map preallocates every entry on every CPU at load: keep a typo from taking the machine's memory.
MAX_FLOWS_LIMIT = 1 << 24

# One row per flow after the per-CPU copies are reduced; times stay in kernel (CLOCK_MONOTONIC) ns.
STATS_DTYPE = np.dtype([
    ("packets_in", "u8"), ("packets_out", "u8"), ("bytes_in", "u8"), ("bytes_out", "u8"),
    ("first_seen_ns", "u8"), ("last_seen_ns", "u8"), ("tcp_flags_in", "u1"), ("tcp_flags_out", "u1"),
    ("rate", "f8"),
])

_PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}


class SortKey(enum.Enum):
    """What the top N is ranked by: bytes or packets since first seen (both directions), or bytes
    per second over the last interval."""

    BYTES = "bytes"
    PACKETS = "packets"
    RATE = "rate"


class TcpFlags(enum.IntFlag):
    """TCP header flags (byte 13), TCPHDR_* in include/net/tcp.h."""

    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80


def flag_names(flags: int) -> str:
    """"SYN|ACK|FIN" in header bit order; "" for none."""
    return "|".join(f.name or "" for f in TcpFlags if flags & f)


@dataclass(frozen=True)
class Flow:
    """One flow as plain Python, from the interface's point of view: `local` is this host's end."""

    family: str
    proto: str
    local: str
    local_port: int
    remote: str
    remote_port: int
    packets_in: int
    packets_out: int
    bytes_in: int
    bytes_out: int
    first_seen: float  # wall-clock seconds (time.time())
    last_seen: float
    tcp_flags_in: int
    tcp_flags_out: int
    rate: float  # bytes per second, both directions, over the last interval

    def endpoints(self) -> str:
        def end(addr: str, port: int) -> str:
            host = f"[{addr}]" if ":" in addr else addr
            return f"{host}:{port}" if port else host

        return f"{self.proto} {end(self.local, self.local_port)} ⇄ {end(self.remote, self.remote_port)}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "family": self.family, "proto": self.proto,
            "local": self.local, "local_port": self.local_port,
            "remote": self.remote, "remote_port": self.remote_port,
            "in": {"packets": self.packets_in, "bytes": self.bytes_in, "tcp_flags": flag_names(self.tcp_flags_in)},
            "out": {"packets": self.packets_out, "bytes": self.bytes_out,
                    "tcp_flags": flag_names(self.tcp_flags_out)},
            "first_seen": round(self.first_seen, 3), "last_seen": round(self.last_seen, 3),
            "rate": round(self.rate, 1),
        }


@dataclass(frozen=True)
class FlowSnapshot:
    """Every flow in the map at `time` (monotonic seconds): `keys` (struct flow_key) and `stats`
    (STATS_DTYPE), row for row. `interval` is the time since the previous snapshot, which `rate`
    covers; `expired` counts the idle flows deleted by this read."""

    time: float
    interval: float
    keys: np.ndarray[Any, Any]
    stats: np.ndarray[Any, Any]
    expired: int
    clock_offset_ns: int  # wall-clock ns minus CLOCK_MONOTONIC ns when read
    families: dict[int, str]

    def __len__(self) -> int:
        return len(self.keys)

    def total(self, field: str) -> int:
        return int(self.stats[field].sum())

    def metric(self, sort: SortKey) -> np.ndarray[Any, Any]:
        s = self.stats
        if sort is SortKey.RATE:
            return np.asarray(s["rate"])
        name = sort.value
        return np.asarray(s[f"{name}_in"] + s[f"{name}_out"])

    def top(self, n: int, sort: SortKey = SortKey.BYTES) -> list[Flow]:
        """The `n` largest flows by `sort`, largest first: argpartition, then a sort of n rows."""
        metric = self.metric(sort)
        count = len(metric)
        if n < count:
            chosen = np.argpartition(metric, count - n)[count - n:]
        else:
            chosen = np.arange(count)
        chosen = chosen[np.argsort(-metric[chosen].astype(np.float64), kind="stable")]
        return [self.flow(int(i)) for i in chosen]

    def flow(self, i: int) -> Flow:
        key, row = self.keys[i], self.stats[i]
        family = self.families.get(int(key["family"]), str(int(key["family"])))
        width = 4 if family == "ipv4" else 16

        def addr(raw: Any) -> str:
            return str(ipaddress.ip_address(bytes(raw[:width])))

        def wall(ns: Any) -> float:
            return (int(ns) + self.clock_offset_ns) / 1e9

        proto = int(key["proto"])
        return Flow(
            family=family, proto=_PROTOCOLS.get(proto, str(proto)),
            local=addr(key["local_addr"]), local_port=int(key["local_port"]),
            remote=addr(key["remote_addr"]), remote_port=int(key["remote_port"]),
            packets_in=int(row["packets_in"]), packets_out=int(row["packets_out"]),
            bytes_in=int(row["bytes_in"]), bytes_out=int(row["bytes_out"]),
            first_seen=wall(row["first_seen_ns"]), last_seen=wall(row["last_seen_ns"]),
            tcp_flags_in=int(row["tcp_flags_in"]), tcp_flags_out=int(row["tcp_flags_out"]),
            rate=float(row["rate"]),
        )

    def flows(self) -> list[Flow]:
        """Every flow as Python objects: for tests and small maps; tools show `top`."""
        return [self.flow(i) for i in range(len(self))]


def reduce_cpus(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Per-CPU struct flow_counters [n, cpus] → one STATS_DTYPE row per flow: counters added,
    first seen the earliest CPU that saw the flow (0 means a CPU saw none), last seen the latest,
    flags ORed."""
    out = np.zeros(len(values), dtype=STATS_DTYPE)
    for name in ("packets_in", "packets_out", "bytes_in", "bytes_out"):
        out[name] = values[name].sum(axis=1, dtype=np.uint64)
    first = values["first_seen_ns"]
    out["first_seen_ns"] = np.where(first == 0, np.iinfo(np.uint64).max, first).min(axis=1) if len(values) else 0
    out["last_seen_ns"] = values["last_seen_ns"].max(axis=1, initial=0)
    for name in ("tcp_flags_in", "tcp_flags_out"):
        out[name] = np.bitwise_or.reduce(values[name], axis=1)
    return out


def _as_void(keys: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Keys as opaque byte strings, padding included, so numpy can sort and search them."""
    return np.ascontiguousarray(keys).view(np.dtype((np.void, keys.dtype.itemsize)))


def bounded_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise OptionValueError(f"{text!r} is not a whole number") from None
    if not 0 < value <= MAX_FLOWS_LIMIT:
        raise OptionValueError(f"{text!r} must be between 1 and {MAX_FLOWS_LIMIT:,}")
    return value


class FlowTracker(Tool):
    """`with FlowTracker("eth0", max_flows=4096) as tracker: tracker.snapshot()`; detaches on exit.
    `mode` says which tc attachment it got once it is open."""

    NAME = "flows"
    HELP = "track connections on an interface: packets, bytes, flags per flow and direction (tc)"
    NEEDS = (("tcx", "clsact"),)
    CAPABILITIES = NET
    KIND = Kind.POLLING
    OPTIONS = (
        IFACE,
        TC_MODE,
        Option("max_flows", f"size of the LRU flow map; the least recently seen flow makes room (default: "
               f"{DEFAULT_MAX_FLOWS:,})", bounded_count, default=DEFAULT_MAX_FLOWS, metavar="N"),
        Option("sort", "rank flows by bytes or packets since first seen, or by bytes/s (default: bytes)", str,
               default=SortKey.BYTES.value, choices=tuple(k.value for k in SortKey), agent=False),
        Option("top", "flows shown per interval, or in the agent exported by bytes (default: 20)", bounded_count,
               default=20, metavar="N"),
        Option("idle", "forget flows not seen for S seconds (default: keep until the LRU evicts them)",
               positive_float, metavar="S", agent=False),
        INTERVAL,
        DURATION,
        JSON.but(help="one JSON object per interval with the top flows, and a final one"),
    )
    AGENT_KEY = "flows"

    def __init__(self, iface: str, *, max_flows: int = DEFAULT_MAX_FLOWS, mode: TcMode = TcMode.AUTO, top: int = 20,
                 sort: SortKey = SortKey.BYTES, idle: Optional[float] = None, pin_dir: Optional[str] = None) -> None:
        super().__init__(pin_dir=pin_dir)  # flows pinned there carry on from an earlier run
        self.iface = iface
        self.max_flows = max_flows
        self.mode = mode
        self.top = top  # flows shown, or exported by bytes
        self.sort = sort
        self.idle = idle  # seconds a flow may go unseen before a view's read forgets it
        self._families: dict[int, str] = {}
        # The previous read, for rates: its keys sorted as bytes, and the bytes of each.
        self._previous: Optional[tuple[float, np.ndarray[Any, Any], np.ndarray[Any, Any]]] = None

    @classmethod
    def _from_options(cls, values: Mapping[str, Any], pin_dir: Optional[str]) -> FlowTracker:
        return cls(values["iface"], max_flows=values["max_flows"], mode=TcMode(values["mode"]), top=values["top"],
                   sort=SortKey(values["sort"]), idle=values["idle"], pin_dir=pin_dir)

    def _open(self) -> None:
        netdev.ifindex(self.iface)  # an unknown name fails here, before anything is loaded
        spec = ObjectSpec.open(tool_object("flows"))
        spec.maps["flows"].max_entries = self.max_flows
        spec.pin_maps(self.pin_dir, ["flows"])
        self._obj = obj = spec.load()
        track = obj.programs
        self.mode = self.attach_tc(self.iface, {TcDirection.INGRESS: track["track_ingress"],
                                                TcDirection.EGRESS: track["track_egress"]}, self.mode)
        labels = obj.exported_type("family").python_type  # enum l3_proto: L3_IPV4 = 0, ...
        self._families = {int(m): m.name.split("_", 1)[1].lower() for m in labels}

    @property
    def map(self) -> Map:
        return self.obj.maps["flows"]

    def snapshot(self, *, expire_idle: Optional[float] = None) -> FlowSnapshot:
        """Reads every flow in one batch lookup. With `expire_idle` (seconds), flows not seen for that
        long are deleted from the map in one batch delete and left out of the result."""
        now_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)  # the clock of bpf_ktime_get_ns
        offset_ns = time.time_ns() - now_ns
        keys, values = self.map.lookup_batch()
        stats = reduce_cpus(values)
        expired = 0
        if expire_idle is not None and len(keys):
            idle = stats["last_seen_ns"] < now_ns - int(expire_idle * 1e9)
            expired = int(idle.sum())
            if expired:
                self._delete(keys[idle])
                keys, stats = keys[~idle], stats[~idle]
        now = now_ns / 1e9
        interval = self._rates(now, keys, stats)
        return FlowSnapshot(now, interval, keys, stats, expired, offset_ns, self._families)

    def _rates(self, now: float, keys: np.ndarray[Any, Any], stats: np.ndarray[Any, Any]) -> float:
        """Fills stats["rate"]: bytes since the previous read over the time since it. A flow that is
        new, or whose counters restarted (expired or evicted, then seen again), counts all its bytes."""
        total = stats["bytes_in"] + stats["bytes_out"]
        void = _as_void(keys)
        order = np.argsort(void, kind="stable")
        previous, self._previous = self._previous, (now, void[order], total[order])
        if previous is None:
            return 0.0
        then, prev_keys, prev_total = previous
        interval = now - then
        delta = total.astype(np.float64)
        if len(prev_keys) and len(keys):
            at = np.minimum(np.searchsorted(prev_keys, void), len(prev_keys) - 1)
            seen = (prev_keys[at] == void) & (prev_total[at] <= total)
            delta[seen] -= prev_total[at][seen]
        if interval > 0:
            stats["rate"] = delta / interval
        return interval

    def _delete(self, keys: np.ndarray[Any, Any]) -> None:
        try:
            self.map.delete_batch(keys)
        except SyscallError as exc:
            # The batch stops at a key the LRU evicted since the read; drop the rest one by one.
            if exc.errno != errno.ENOENT:
                raise
            for i in range(len(keys)):
                self.map.delete(keys[i : i + 1].tobytes())

    def metrics(self) -> Iterator[Metric]:
        """The top flows by bytes, so the series stay bounded however many flows there are;
        `bpfscope_flows` counts them all."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snap = self.snapshot()
        labels = ["interface", "protocol", "local", "local_port", "remote", "remote_port", "direction"]
        size = CounterMetricFamily("bpfscope_flow_bytes", "Bytes of the top flows by bytes (tc)", labels=labels)
        packets = CounterMetricFamily("bpfscope_flow_packets", "Packets of the top flows by bytes (tc)", labels=labels)
        for flow in snap.top(self.top, SortKey.BYTES):
            ends = [self.iface, flow.proto, flow.local, str(flow.local_port), flow.remote, str(flow.remote_port)]
            for direction, nbytes, npackets in (("in", flow.bytes_in, flow.packets_in),
                                                ("out", flow.bytes_out, flow.packets_out)):
                size.add_metric([*ends, direction], nbytes)
                packets.add_metric([*ends, direction], npackets)
        tracked = GaugeMetricFamily("bpfscope_flows", "Flows tracked (tc)", labels=["interface"])
        tracked.add_metric([self.iface], len(snap))
        yield from (size, packets, tracked)


TOOL = FlowTracker
