"""The TCP tracer: loads tcp.bpf.o and attaches it to stable tracepoints only (sock:inet_sock_set_state,
tcp:tcp_retransmit_skb, tcp:tcp_retransmit_synack, skb:kfree_skb), so it runs where kprobes do not.

It streams one record per connection opened (`connect`, with the handshake's latency), accepted
(`accept`, with the SYN-ACK's RTT), closed (`close`: life, bytes each way, smoothed RTT), per
retransmitted segment (`retransmit`, with the TCP state) and per dropped TCP packet (`drop`, with the
kernel's drop reason); `--events` picks the kinds the kernel puts in the ring. With `--rtt` nothing
is streamed: the counters the kernel keeps (connections, retransmits, drops by reason) and the RTT
histograms per remote are read each interval. Filters (network namespaces, a socket's cgroup) run
in the kernel before anything else."""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional

import numpy as np

from ..errors import BpfscopeError
from ..maps import PerCpuHashMap
from ..mounts import ensure_tracefs
from ..object import ObjectSpec, tool_object
from ..output.histogram import Log2Histogram
from ..ringbuf import RingBuffer
from ._base import DURATION, INTERVAL, JSON, RING_BYTES, TRACE, Kind, Option, OptionValueError, Tool

if TYPE_CHECKING:
    from prometheus_client.core import Metric

__all__ = ["EVENT_KINDS", "MAX_NETNS", "TOOL", "Counts", "TcpTracer", "drop_reasons", "netns_inode"]

EVENT_KINDS = ("connect", "accept", "close", "retransmit", "drop")  # enum tcp_event_kind's order
MAX_NETNS = 8  # MAX_NETNS in tcp.bpf.c
DEFAULT_RING_BYTES = 1 << 22
# include/net/tcp_states.h, as the tracepoints print them
_STATES = ("", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE", "CLOSE_WAIT",
           "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV")
_AF_INET6 = 10
_NETNS_DIR = "/var/run/netns"  # ip-netns(8)
_REASON = re.compile(r'\{\s*(\d+),\s*"(\w+)"\s*\}')


def event_kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in EVENT_KINDS]
    if unknown or not kinds:
        raise OptionValueError(f"{text!r}: give some of {','.join(EVENT_KINDS)}")
    return kinds


def netns_inode(path: str) -> int:
    """The inode of a network namespace: `path` (/proc/PID/ns/net, /var/run/netns/NAME) or a name
    `ip netns` knows; it is the namespace's ns.inum, which the programs compare."""
    full = path if "/" in path else os.path.join(_NETNS_DIR, path)
    try:
        return os.stat(full).st_ino
    except OSError as exc:
        raise BpfscopeError(errno.ENOENT, f"no network namespace at {full} ({exc.strerror})") from None


def cgroup_inode(path: str) -> int:
    """The id of the cgroup v2 directory `path` (absolute, or under cgroup v2's mount): its inode."""
    from .._attach.cgroup import cgroup_directory

    return os.stat(cgroup_directory(path)).st_ino


def drop_reasons() -> dict[int, str]:
    """enum skb_drop_reason's names by value, as this kernel's skb:kfree_skb prints them."""
    with open(os.path.join(ensure_tracefs(), "events", "skb", "kfree_skb", "format")) as f:
        return {int(n): name for n, name in _REASON.findall(f.read())}


@dataclass
class Counts:
    """What the kernel counted since the tool opened."""

    opened: int = 0  # connections a connect() opened
    accepted: int = 0  # connections a listener accepted (their handshake ended)
    closed: int = 0  # of those opened or accepted while the tool ran
    failed: int = 0  # connect()s that ended before ESTABLISHED
    retransmits: int = 0  # segments, as TcpRetransSegs counts them
    drops: dict[str, int] = field(default_factory=dict)  # TCP packets dropped, by reason
    rtt: dict[str, list[int]] = field(default_factory=dict)  # remote → log2 µs slots of srtt at close
    rtt_sum_us: int = 0  # of all remotes' samples

    def as_dict(self) -> dict[str, Any]:
        return {"opened": self.opened, "accepted": self.accepted, "closed": self.closed, "failed": self.failed,
                "retransmits": self.retransmits, "drops": dict(sorted(self.drops.items())),
                "rtt_us": {remote: _slots(slots) for remote, slots in self.rtt.items()}}


def _slots(slots: list[int]) -> dict[str, int]:
    """A histogram as {"low-high": count} for the slots used."""
    return {f"{0 if i == 0 else 1 << i}-{(1 << (i + 1)) - 1}": n for i, n in enumerate(slots) if n}


def _address(family: int, raw: bytes) -> str:
    return str(ipaddress.IPv6Address(raw) if family == _AF_INET6 else ipaddress.IPv4Address(raw[:4]))


class TcpTracer(Tool):
    """`with TcpTracer(events=..., netns=(inode, ...)) as tcp:` loads and attaches; `poll()` gives
    batches of raw records (struct tcp_event), `records(batch)` the dicts the CLI writes, `counts()`
    the kernel's counters and RTT histograms."""

    NAME = "tcp"
    HELP = "TCP connections (connect, accept, life, bytes), retransmits, RTT and drops with their reason (tracepoints)"
    NEEDS = (("tracepoints",), ("tracefs",), ("ringbuf",))
    CAPABILITIES = TRACE
    KIND = Kind.STREAMING
    OPTIONS = (
        Option("events", f"only these kinds of event, comma-separated (default: {','.join(EVENT_KINDS)})",
               event_kinds, default=EVENT_KINDS, metavar="KINDS", agent=False),
        Option("netns", "only sockets and packets of this network namespace: a path (/proc/PID/ns/net) or an "
               f"`ip netns` name; up to {MAX_NETNS} times", str, metavar="NETNS", many=True),
        Option("cgroup", "only sockets of this cgroup v2 directory (absolute, or under cgroup v2's mount); an "
               "accepted socket is its listener's", str, metavar="PATH"),
        Option("rtt", "stream nothing: print the kernel's counters and the RTT histogram of each remote (srtt "
               "of each connection at close) every interval", agent=False),
        INTERVAL.but(default=None, help="with --rtt: seconds between updates (default: 1)"),
        DURATION,
        JSON.but(help="one JSON object per event, with \"event\" its kind (with --rtt: per interval), and a "
                 "final summary"),
        RING_BYTES.but(default=DEFAULT_RING_BYTES),
    )
    AGENT_KEY = "tcp"
    AGENT_VALUES = {"rtt": True}  # counted in the kernel, nothing streamed

    def __init__(self, *, events: tuple[str, ...] = EVENT_KINDS, netns: tuple[str, ...] = (),
                 cgroup: Optional[str] = None, rtt: bool = False, ring_bytes: int = DEFAULT_RING_BYTES,
                 pin_dir: Optional[str] = None) -> None:
        super().__init__(pin_dir=pin_dir)
        self.events = () if rtt else events
        self.netns = netns
        self.cgroup = cgroup
        self.rtt = rtt
        self.ring_bytes = ring_bytes
        self.reasons: dict[int, str] = {}
        self._clock_offset_ns = 0
        self._events: Optional[RingBuffer] = None

    @classmethod
    def _from_options(cls, values: Mapping[str, Any], pin_dir: Optional[str]) -> TcpTracer:
        return cls(events=values["events"], netns=values["netns"], cgroup=values["cgroup"], rtt=values["rtt"],
                   ring_bytes=values["ring_bytes"], pin_dir=pin_dir)

    @property
    def kind(self) -> Kind:
        return Kind.POLLING if self.rtt else Kind.STREAMING

    def _open(self) -> None:
        if len(self.netns) > MAX_NETNS:
            raise BpfscopeError(errno.EINVAL, f"--netns given {len(self.netns)} times; at most {MAX_NETNS}")
        inodes = [netns_inode(path) for path in self.netns]  # input first: nothing loads for a bad one
        cgroup_id = cgroup_inode(self.cgroup) if self.cgroup is not None else 0
        self.reasons = drop_reasons()
        spec = ObjectSpec.open(tool_object("tcp"))
        rodata = spec.rodata
        rodata["cfg_netns"] = tuple(inodes + [0] * (MAX_NETNS - len(inodes)))
        rodata["cfg_netns_count"] = len(inodes)
        rodata["cfg_cgroup_id"] = cgroup_id
        rodata["cfg_events"] = sum(1 << EVENT_KINDS.index(kind) for kind in self.events)
        spec.maps["events"].max_entries = self.ring_bytes if self.events else 4096
        spec.pin_maps(self.pin_dir, ["counters", "drops", "rtts", "events_lost"])
        self._obj = obj = spec.load()
        for program, (category, name) in (("trace_state", ("sock", "inet_sock_set_state")),
                                          ("trace_retransmit", ("tcp", "tcp_retransmit_skb")),
                                          ("trace_retransmit_synack", ("tcp", "tcp_retransmit_synack")),
                                          ("trace_drop", ("skb", "kfree_skb"))):
            self.attach(obj.programs[program].attach_tracepoint(category, name))
        if self.events:
            self._events = self.ring(obj.ring_buffer("events"))
        self._clock_offset_ns = time.time_ns() - time.clock_gettime_ns(time.CLOCK_MONOTONIC)

    # --- streaming ---

    def poll(self, timeout_ms: int = 100) -> np.ndarray[Any, Any]:
        """The records (struct tcp_event) the ring holds, waiting up to `timeout_ms` for the first."""
        assert self._events is not None, "open() first, without rtt=True"
        return self._events.next_batch(timeout_ms)

    def records(self, batch: np.ndarray[Any, Any]) -> list[dict[str, Any]]:
        """Each record as the JSON line says it: "event" its kind, then its own fields."""
        columns = {name: batch[name].tolist() for name in (
            "time_ns", "duration_ns", "bytes_sent", "bytes_received", "netns", "pid", "rtt_us", "reason", "sport",
            "dport", "family", "kind", "state", "active")}
        saddrs, daddrs, comms = batch["saddr"].tolist(), batch["daddr"].tolist(), batch["comm"].tolist()
        out = []
        for i in range(len(batch)):
            c = {name: values[i] for name, values in columns.items()}
            kind = EVENT_KINDS[c["kind"]]
            family = c["family"]
            record: dict[str, Any] = {
                "time": round((c["time_ns"] + self._clock_offset_ns) / 1e9, 6), "event": kind, "netns": c["netns"],
                "saddr": _address(family, bytes(saddrs[i])), "sport": c["sport"],
                "daddr": _address(family, bytes(daddrs[i])), "dport": c["dport"]}
            if kind == "connect":
                record.update(pid=c["pid"], comm=_text(comms[i]), handshake_us=round(c["duration_ns"] / 1e3, 1))
            elif kind == "accept":
                record.update(handshake_us=c["rtt_us"])  # the SYN-ACK's round trip: SYN-ACK sent to ACK in
            elif kind == "close":
                record.update(side="connect" if c["active"] else "accept", pid=c["pid"] or None,
                              comm=_text(comms[i]) or None, duration_ms=round(c["duration_ns"] / 1e6, 3),
                              bytes_sent=c["bytes_sent"], bytes_received=c["bytes_received"], rtt_us=c["rtt_us"],
                              state=_STATES[c["state"]] if c["state"] < len(_STATES) else str(c["state"]))
            elif kind == "retransmit":
                record.update(state=_STATES[c["state"]] if c["state"] < len(_STATES) else str(c["state"]),
                              segments=c["reason"])
            else:
                record.update(reason=self.reasons.get(c["reason"], str(c["reason"])))
            out.append(record)
        return out

    # --- counting ---

    def counts(self) -> Counts:
        opened, accepted, closed, retransmits, failed, rtt_us = (
            int(n) for n in self._per_cpu("counters").lookup_batch_sum()[1].tolist())
        counts = Counts(opened=opened, accepted=accepted, closed=closed, failed=failed, retransmits=retransmits,
                        rtt_sum_us=rtt_us)
        keys, values = self._per_cpu("drops").lookup_batch_sum()
        counts.drops = {self.reasons.get(int(k), str(int(k))): int(v) for k, v in zip(keys.tolist(), values.tolist())}
        keys, values = self._per_cpu("rtts").lookup_batch_sum()
        for key, n in zip(keys, values.tolist()):
            remote = _address(int(key["family"]), bytes(key["addr"]))
            slots = counts.rtt.setdefault(remote, [0] * 32)
            slots[int(key["slot"])] += int(n)
        return counts

    def _per_cpu(self, name: str) -> PerCpuHashMap:
        found = self.obj.maps[name]
        assert isinstance(found, PerCpuHashMap), f"{name} is a per-CPU map in tcp.bpf.c"
        return found

    def snapshot(self) -> Counts:
        return self.counts()

    def metrics(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        counts = self.counts()
        connections = CounterMetricFamily("bpfscope_tcp_connections", "TCP connections opened (connect) and "
                                          "accepted (accept), at the end of their handshake", labels=["side"])
        connections.add_metric(["connect"], counts.opened)
        connections.add_metric(["accept"], counts.accepted)
        yield connections
        yield CounterMetricFamily("bpfscope_tcp_connections_closed", "TCP connections closed (of those opened "
                                  "or accepted while traced)", value=counts.closed)
        yield CounterMetricFamily("bpfscope_tcp_connect_failures", "connect()s that ended before the handshake "
                                  "did", value=counts.failed)
        yield CounterMetricFamily("bpfscope_tcp_retransmitted_segments", "TCP segments retransmitted (as "
                                  "TcpRetransSegs)", value=counts.retransmits)
        drops = CounterMetricFamily("bpfscope_tcp_drops", "TCP packets the kernel dropped, by its drop reason "
                                    "(enum skb_drop_reason)", labels=["reason"])
        for reason, n in sorted(counts.drops.items()):
            drops.add_metric([reason], n)
        yield drops
        slots = [sum(column) for column in zip(*counts.rtt.values())] or [0] * 32
        buckets, cumulative = [], 0
        for slot, n in enumerate(slots):
            cumulative += n
            buckets.append((repr((1 << (slot + 1)) / 1e6), cumulative))
        buckets.append(("+Inf", cumulative))
        rtt = HistogramMetricFamily("bpfscope_tcp_rtt_seconds", "Smoothed RTT of each TCP connection at its "
                                    "close (tcp_sock srtt_us), all remotes")
        rtt.add_metric([], buckets, counts.rtt_sum_us / 1e6)
        yield rtt

    def histograms(self, counts: Counts) -> dict[str, Log2Histogram]:
        """The RTT histograms by remote, most samples first."""
        ordered = sorted(counts.rtt.items(), key=lambda item: (-sum(item[1]), item[0]))
        return {remote: Log2Histogram(slots, "usecs") for remote, slots in ordered}


def _text(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("utf-8", "backslashreplace")


TOOL = TcpTracer
