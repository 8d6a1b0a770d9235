"""Block I/O latency: loads biolatency.bpf.o, attaches it to block_rq_insert, block_rq_issue and
block_rq_complete (their tp_btf forms where the kernel takes them and they pass the request alone, else
the tracepoints) and reads its log2 histograms, kept in the kernel per CPU for each disk and operation,
in one batch: the device time of every request (issue to completion) and the queue time of those that
waited in a queue (insert to issue) apart.

A request is counted when it completes, as /proc/diskstats counts it. The disk filter runs in the
kernel. There is no process filter: the block layer issues a request from whichever task unplugs the
queue or runs its dispatch (often a kworker), so the task the hooks see is not the one that asked.

In the agent the histograms are Prometheus histograms in seconds by disk and operation (32 disks by
name, first come, for as long as they exist; the rest as "other")."""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Mapping, NamedTuple, Optional

from ..errors import BpfscopeError
from ..features import Feature, tracepoint_arguments
from ..object import ObjectSpec, tool_object
from ..output.histogram import Durations, Unit
from ..variants import Variant, choose
from ._base import DURATION, INTERVAL, JSON, TRACE, Kind, Option, OptionValueError, Tool

if TYPE_CHECKING:
    from prometheus_client.core import Metric

__all__ = ["OTHER", "BlockLatency", "Disk", "IoSnapshot", "TOOL", "disk_named", "disk_of"]

_MINOR_BITS = 20  # the kernel's dev_t: major << 20 | minor (MINORBITS)
TOP_DISKS = 32  # disks the agent labels by name, first come; the rest are "other"
OTHER = "other"
# The agent's histograms are in ns: slot i is [2^i, 2^(i+1)) ns. It exports 1 µs to about 69 s.
_EXPORTED_SLOTS = range(9, 36)


class Disk(NamedTuple):
    """A whole disk: its name and its number as the kernel keeps it (major << 20 | first minor)."""

    name: str
    dev: int

    @property
    def numbers(self) -> str:
        """MAJ:MIN, as /proc/diskstats and lsblk show it."""
        return f"{self.dev >> _MINOR_BITS}:{self.dev & ((1 << _MINOR_BITS) - 1)}"


def disk_named(text: str) -> Disk:
    """The disk `text` names (sda, /dev/nvme0n1, loop3), from /sys/class/block; a partition is refused,
    since a request belongs to its whole disk."""
    name = os.path.basename(text.rstrip("/")) if text.startswith("/dev/") else text
    sysfs = f"/sys/class/block/{name}"
    if not name or "/" in name or not os.path.exists(f"{sysfs}/dev"):
        raise OptionValueError(f"{text!r} is not a block device (disks: {', '.join(_disks()) or 'none'})")
    if os.path.exists(f"{sysfs}/partition"):
        whole = os.path.basename(os.path.dirname(os.path.realpath(sysfs)))
        raise OptionValueError(f"{name} is a partition of {whole}; its requests are {whole}'s: give {whole}")
    with open(f"{sysfs}/dev") as f:
        major, minor = (int(n) for n in f.read().split(":"))
    return Disk(name, major << _MINOR_BITS | minor)


def disk_of(dev: int) -> Disk:
    """The disk numbered `dev`; named MAJ:MIN once it is gone."""
    major, minor = dev >> _MINOR_BITS, dev & ((1 << _MINOR_BITS) - 1)
    try:
        name = os.path.basename(os.readlink(f"/sys/dev/block/{major}:{minor}"))
    except OSError:
        name = f"{major}:{minor}"
    return Disk(name, dev)


def _disks() -> list[str]:
    try:
        return sorted(name for name in os.listdir("/sys/block"))
    except OSError:
        return []


@dataclass(frozen=True)
class IoTimes:
    """One disk and operation: the device time of its completed requests, and the queue time of those
    that were inserted into a queue."""

    queue: Durations
    device: Durations

    def __add__(self, other: IoTimes) -> IoTimes:
        return IoTimes(self.queue + other.queue, self.device + other.device)

    def __sub__(self, earlier: IoTimes) -> IoTimes:
        return IoTimes(self.queue - earlier.queue, self.device - earlier.device)


@dataclass(frozen=True)
class IoSnapshot:
    """The histograms since attach, by (disk number, operation name), and the completions lost to a
    full map."""

    time: float
    unit: Unit
    times: dict[tuple[int, str], IoTimes] = field(default_factory=dict)
    lost: int = 0

    def __sub__(self, earlier: IoSnapshot) -> IoSnapshot:
        empty = IoTimes(Durations(self.unit), Durations(self.unit))
        return IoSnapshot(self.time - earlier.time, self.unit,
                          {key: times - earlier.times.get(key, empty) for key, times in self.times.items()},
                          self.lost - earlier.lost)

    def completed(self, dev: int) -> dict[str, int]:
        """Requests of disk `dev` completed, by operation."""
        return {op: times.device.count for (disk, op), times in self.times.items() if disk == dev}


def _request_first() -> bool:
    """Whether this kernel's block tracepoints pass the request alone (Linux 5.11+; before, the request's
    queue came first), as the tp_btf programs read them."""
    return (tracepoint_arguments("block_rq_insert"), tracepoint_arguments("block_rq_issue"),
            tracepoint_arguments("block_rq_complete")) == (1, 1, 3)


class BlockLatency(Tool):
    """`with BlockLatency() as bio: bio.snapshot().times`; detaches on exit."""

    NAME = "biolatency"
    HELP = ("block I/O latency as log2 histograms per disk and operation, queue and device time apart "
            "(block tracepoints)")
    NEEDS = (("tp_btf", "tracepoints"),)
    CAPABILITIES = TRACE
    KIND = Kind.POLLING
    OPTIONS = (
        Option("disk", "only this disk (sda, nvme0n1, /dev/loop3; a whole disk, not a partition)", disk_named,
               metavar="DISK"),
        Option("unit", "histogram unit (default: us)", str, default=Unit.USECS.value,
               choices=tuple(u.value for u in Unit), agent=False),
        INTERVAL.but(default=None, help="also print each interval's histograms, every S seconds"),
        DURATION,
        JSON.but(help="one JSON object per interval, and a final one"),
    )
    AGENT_KEY = "biolatency"
    AGENT_VALUES = {"unit": Unit.NSECS.value}  # the finest unit: the exported buckets are in seconds
    # The struct request itself at each tracepoint (Linux 5.5+, and the request alone: 5.11+), known
    # by its address; or the tracepoints' records, a request known by its disk and first sector.
    VARIANT = Variant(Feature.TP_BTF, ("insert_btf", "issue_btf", "complete_btf"),
                      ("insert_tp", "issue_tp", "complete_tp"))

    def __init__(self, *, disk: Optional[Disk] = None, unit: Unit = Unit.USECS,
                 pin_dir: Optional[str] = None) -> None:
        super().__init__(pin_dir=pin_dir)  # histograms pinned there carry on from an earlier run
        self.disk = disk
        self.unit = unit
        self.form = ""  # "tp_btf" or "tracepoint": the programs this kernel took
        self._ops: dict[int, str] = {}  # enum io_op, from BTF
        self._op_numbers: dict[str, int] = {}
        self._labelled: dict[int, str] = {}  # the agent's: disks exported by name (at most TOP_DISKS)
        self._retired: dict[tuple[str, str], IoTimes] = {}  # the agent's: unlabelled disks gone, by op
        self._names: dict[int, Disk] = {}

    @classmethod
    def _from_options(cls, values: Mapping[str, Any], pin_dir: Optional[str]) -> BlockLatency:
        return cls(disk=values["disk"], unit=Unit(values["unit"]), pin_dir=pin_dir)

    def _open(self) -> None:
        if self.disk is not None and not os.path.exists(f"/sys/dev/block/{self.disk.numbers}"):
            raise BpfscopeError(errno.ENODEV, f"disk {self.disk.name} ({self.disk.numbers}) is gone")
        spec = ObjectSpec.open(tool_object("biolatency"))
        btf = choose(spec, self.VARIANT) is None and _request_first()
        for name in self.VARIANT.needs + self.VARIANT.instead:
            spec.programs[name].autoload = (name in self.VARIANT.needs) == btf
        self.form = "tp_btf" if btf else "tracepoint"
        spec.rodata["cfg_dev"] = self.disk.dev if self.disk is not None else 0
        spec.rodata["cfg_unit_ns"] = self.unit.ns
        spec.pin_maps(self.pin_dir, ["hists", "lost"])
        self._obj = obj = spec.load()
        names = obj.exported_type("op").python_type  # enum io_op: IO_READ = 0, ...
        self._ops = {int(n): n.name.removeprefix("IO_").lower() for n in names}
        self._op_numbers = {name: number for number, name in self._ops.items()}
        for program in obj.programs.values():
            self.attach(program.attach())

    # --- reading ---

    def snapshot(self) -> IoSnapshot:
        now = time.monotonic()
        keys, values = self.obj.maps["hists"].lookup_batch_sum()  # type: ignore[attr-defined]
        times = {(int(key["dev"]), self.op_name(int(key["op"]))):
                 IoTimes(Durations.from_row(self.unit, value["queue"]), Durations.from_row(self.unit, value["device"]))
                 for key, value in zip(keys, values)}
        return IoSnapshot(now, self.unit, times, self.lost)

    @property
    def lost(self) -> int:
        """Completions not counted because the map of disks and operations was full."""
        _, values = self.obj.maps["lost"].lookup_batch_sum()  # type: ignore[attr-defined]
        return int(values[0])

    def op_name(self, op: int) -> str:
        return self._ops.get(op, str(op))

    def order(self, dev: int, op: str) -> tuple[str, int]:
        """Where a disk and operation is shown: by the disk's name, then read, write, flush, discard, other."""
        return self.disk_of(dev).name, self._op_numbers.get(op, len(self._op_numbers))

    def disk_of(self, dev: int) -> Disk:
        """The disk numbered `dev`, its name looked up once."""
        disk = self._names.get(dev)
        if disk is None:
            disk = self._names[dev] = disk_of(dev)
        return disk

    def as_dict(self, snap: IoSnapshot) -> dict[str, Any]:
        """A JSON-ready view of a snapshot (or of an interval's delta): per disk and operation, the
        device and queue histograms with their buckets, count, average, percentiles and exact total."""
        rows = []
        for (dev, op), times in sorted(snap.times.items(), key=lambda item: self.order(*item[0])):
            if times.device.count or times.queue.count:
                disk = self.disk_of(dev)
                rows.append({"disk": disk.name, "dev": disk.numbers, "op": op, "device": times.device.as_dict(),
                             "queue": times.queue.as_dict()})
        requests = sum(times.device.count for times in snap.times.values())
        return {"form": self.form, "unit": self.unit.label, "requests": requests, "disks": rows,
                "lost_requests": snap.lost}

    def metrics(self) -> Iterator[Metric]:
        """bpfscope_block_io_device_seconds and bpfscope_block_io_queue_seconds by disk and operation: the
        first 32 disks that did I/O by name, for as long as they exist, and the rest together as "other"."""
        from prometheus_client.core import HistogramMetricFamily

        families = {
            "device": HistogramMetricFamily("bpfscope_block_io_device_seconds", "Time block I/O requests took "
                                            "from issue to completion, by disk and operation", labels=["disk", "op"]),
            "queue": HistogramMetricFamily("bpfscope_block_io_queue_seconds", "Time block I/O requests waited "
                                           "in a queue before their issue, by disk and operation",
                                           labels=["disk", "op"]),
        }
        merged = dict(self._retired)  # by (label, op): "other" keeps what disks gone since brought to it
        for (dev, op), times in self._forget_gone(self.snapshot().times).items():
            if dev not in self._labelled and len(self._labelled) < TOP_DISKS:
                self._labelled[dev] = self.disk_of(dev).name
            key = (self._labelled.get(dev, OTHER), op)
            merged[key] = merged[key] + times if key in merged else times
        for (disk, op), times in sorted(merged.items()):
            for phase, durations in (("device", times.device), ("queue", times.queue)):
                families[phase].add_metric([disk, op], durations.prometheus_buckets(_EXPORTED_SLOTS),
                                           durations.sum_ns / 1e9)
        yield from families.values()

    def _forget_gone(self, times: dict[tuple[int, str], IoTimes]) -> dict[tuple[int, str], IoTimes]:
        """Deletes the histograms of disks that no longer exist (loop devices come and go) from the map,
        so that it keeps room: a labelled disk's series end and its place is free; the rest stay in
        "other"."""
        kept = {}
        for (dev, op), io in times.items():
            if os.path.exists(f"/sys/dev/block/{self.disk_of(dev).numbers}"):
                kept[(dev, op)] = io
                continue
            self.obj.maps["hists"].delete({"dev": dev, "op": self._op_numbers[op]})
            self._names.pop(dev, None)
            if dev not in self._labelled:
                key = (OTHER, op)
                self._retired[key] = self._retired[key] + io if key in self._retired else io
        for dev in {dev for dev, _ in times} - {dev for dev, _ in kept}:
            self._labelled.pop(dev, None)
        return kept


TOOL = BlockLatency
