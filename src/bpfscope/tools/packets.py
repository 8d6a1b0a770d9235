"""The XDP packet counter: loads packets.bpf.o, attaches it to one interface and reads its per-CPU
counters in one batch per map. Protocol names come from the program's own enums. A polling tool:
nothing is lost (the counters are per CPU), and the agent exports the counters as they are."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional

from ..netdev import ifindex
from ..object import ObjectSpec, tool_object
from ..program import XdpMode
from ._base import DURATION, IFACE, INTERVAL, JSON, NET, XDP_MODE, Kind, Tool

if TYPE_CHECKING:
    from prometheus_client.core import Metric

__all__ = ["Count", "Snapshot", "PacketCounter", "TOOL"]


@dataclass(frozen=True)
class Count:
    packets: int = 0
    bytes: int = 0

    def __sub__(self, other: Count) -> Count:
        return Count(self.packets - other.packets, self.bytes - other.bytes)


@dataclass(frozen=True)
class Snapshot:
    """Counters since attach: by link-layer protocol (ipv4, ipv6, arp, other) and, for IP
    packets, by transport protocol (tcp, udp, icmp, other)."""

    time: float
    l3: dict[str, Count] = field(default_factory=dict)
    l4: dict[str, Count] = field(default_factory=dict)

    @property
    def total(self) -> Count:
        return Count(sum(c.packets for c in self.l3.values()), sum(c.bytes for c in self.l3.values()))

    def __sub__(self, earlier: Snapshot) -> Snapshot:
        return Snapshot(
            self.time - earlier.time,
            {k: v - earlier.l3.get(k, Count()) for k, v in self.l3.items()},
            {k: v - earlier.l4.get(k, Count()) for k, v in self.l4.items()},
        )


class PacketCounter(Tool):
    """`with PacketCounter("eth0") as counter: counter.snapshot()`; detaches on exit."""

    NAME = "packets"
    HELP = "count packets and bytes by protocol on an interface (XDP)"
    NEEDS = (("xdp_link",),)
    CAPABILITIES = NET
    KIND = Kind.POLLING
    OPTIONS = (IFACE, XDP_MODE, INTERVAL, DURATION, JSON)
    AGENT_KEY = "packets"

    def __init__(self, iface: str, *, mode: XdpMode = XdpMode.AUTO, pin_dir: Optional[str] = None) -> None:
        super().__init__(pin_dir=pin_dir)  # counters pinned there carry on from an earlier run
        self.iface = iface
        self.mode = mode
        self._names: dict[str, list[str]] = {}

    @classmethod
    def _from_options(cls, values: Mapping[str, Any], pin_dir: Optional[str]) -> PacketCounter:
        return cls(values["iface"], mode=XdpMode(values["mode"]), pin_dir=pin_dir)

    def _open(self) -> None:
        ifindex(self.iface)  # an unknown interface stops here, before anything is loaded
        spec = ObjectSpec.open(tool_object("packets"))
        spec.pin_maps(self.pin_dir, ["counts"])
        self._obj = obj = spec.load()
        self.mode = self.attach(obj.programs["count_packets"].attach_xdp(self.iface, mode=self.mode)).mode
        for table in ("l3", "l4"):
            labels = obj.exported_type(table).python_type  # enum l3_proto: L3_IPV4 = 0, ...
            self._names[table] = [m.name.split("_", 1)[1].lower() for m in labels if not m.name.endswith("_COUNT")]

    def snapshot(self) -> Snapshot:
        now = time.monotonic()
        _, values = self.obj.maps["counts"].lookup_batch_sum()  # type: ignore[attr-defined]
        tables = {
            table: {name: Count(int(row["packets"]), int(row["bytes"])) for name, row in zip(names, values[0][table])}
            for table, names in self._names.items()
        }
        return Snapshot(now, tables["l3"], tables["l4"])

    def metrics(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        snap = self.snapshot()
        for prefix, table, what in (("packet", snap.l3, "link-layer"), ("ip_packet", snap.l4, "IP")):
            packets = CounterMetricFamily(f"bpfscope_{prefix}s", f"Packets received, by {what} protocol (XDP)",
                                          labels=["interface", "protocol"])
            size = CounterMetricFamily(f"bpfscope_{prefix}_bytes", f"Bytes received, by {what} protocol (XDP)",
                                       labels=["interface", "protocol"])
            for protocol, count in table.items():
                packets.add_metric([self.iface, protocol], count.packets)
                size.add_metric([self.iface, protocol], count.bytes)
            yield packets
            yield size

    def as_dict(self, snap: Snapshot, rates: Optional[Snapshot] = None) -> dict[str, Any]:
        """A JSON-ready view: counts since attach and, given an interval's delta, rates per second."""

        def rows(now: dict[str, Count], delta: Optional[dict[str, Count]], seconds: float) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for name, count in now.items():
                row: dict[str, Any] = {"packets": count.packets, "bytes": count.bytes}
                if delta is not None and seconds > 0:
                    row["pps"] = round(delta[name].packets / seconds, 1)
                    row["bps"] = round(delta[name].bytes * 8 / seconds, 1)
                out[name] = row
            return out

        seconds = rates.time if rates else 0.0
        return {
            "iface": self.iface,
            "mode": self.mode.value,
            "total": {"packets": snap.total.packets, "bytes": snap.total.bytes},
            "l3": rows(snap.l3, rates.l3 if rates else None, seconds),
            "l4": rows(snap.l4, rates.l4 if rates else None, seconds),
        }


TOOL = PacketCounter
