"""The XDP packet counter: loads packets.bpf.o, attaches it to one interface and reads its per-CPU
counters in one batch per map. Protocol names come from the program's own enums."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Optional

from ..link import Link
from ..object import Object, ObjectSpec, tool_object
from ..program import XdpMode

__all__ = ["Count", "Snapshot", "PacketCounter"]


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


class PacketCounter:
    """`with PacketCounter("eth0") as counter: counter.snapshot()`; detaches on exit."""

    def __init__(self, iface: str, *, mode: XdpMode = XdpMode.AUTO, pin_dir: Optional[str] = None) -> None:
        self.iface = iface
        self.mode = mode
        self.pin_dir = pin_dir  # counters pinned here carry on from an earlier run
        self._obj: Optional[Object] = None
        self._link: Optional[Link] = None
        self._names: dict[str, list[str]] = {}

    def open(self) -> PacketCounter:
        spec = ObjectSpec.open(tool_object("packets"))
        spec.pin_maps(self.pin_dir, ["counts"])
        obj = spec.load()
        try:
            link = obj.programs["count_packets"].attach_xdp(self.iface, mode=self.mode)
            self._link, self.mode = link, link.mode
        except BaseException:
            obj.close()
            raise
        self._obj = obj
        for table in ("l3", "l4"):
            labels = obj.exported_type(table).python_type  # enum l3_proto: L3_IPV4 = 0, ...
            self._names[table] = [m.name.split("_", 1)[1].lower() for m in labels if not m.name.endswith("_COUNT")]
        return self

    def snapshot(self) -> Snapshot:
        assert self._obj is not None, "open() first"
        now = time.monotonic()
        _, values = self._obj.maps["counts"].lookup_batch_sum()  # type: ignore[attr-defined]
        tables = {
            table: {name: Count(int(row["packets"]), int(row["bytes"])) for name, row in zip(names, values[0][table])}
            for table, names in self._names.items()
        }
        return Snapshot(now, tables["l3"], tables["l4"])

    def close(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None
        if self._obj is not None:
            self._obj.close()
            self._obj = None

    def __enter__(self) -> PacketCounter:
        return self.open()

    def __exit__(
        self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.close()

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
