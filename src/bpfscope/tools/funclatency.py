"""Function latency: loads funclatency.bpf.o, puts a uretprobe and a uprobe on one function of a
binary or library, and reads the per-CPU log2 histogram in one batch.

Go binaries are refused: a uretprobe replaces the return address on the stack, and the Go runtime
moves goroutine stacks and walks them, so the traced program crashes or misbehaves.

In the agent each function is an instance of its own (`tools.funclatency` is a list), exported as a
Prometheus histogram in seconds."""

from __future__ import annotations

import errno
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Iterator, Mapping, NamedTuple, Optional

from ..errors import BpfscopeError
from ..object import ObjectSpec, tool_object
from ..output.histogram import Durations, Log2Histogram, Unit
from ..program import resolve_binary
from ._base import DURATION, INTERVAL, JSON, PID, TRACE, Kind, Option, OptionValueError, Tool, check_pid

if TYPE_CHECKING:
    from prometheus_client.core import Metric

__all__ = ["TOOL", "Function", "FunctionLatency", "LatencySnapshot", "Unit", "elf_section_names", "is_go_binary",
           "parse_target"]

GO_REFUSAL = "uretprobes corrupt Go stacks (they move goroutine stacks); funclatency refuses Go binaries"
_GO_SECTIONS = frozenset({".go.buildinfo", ".note.go.buildid", ".gopclntab"})


# Its histogram's slots are log2 of the unit (the agent's: ns, so slot i is [2^i, 2^(i+1)) ns); the agent
# exports the slots from 256 ns to about 69 s, a fixed set so every scrape has the same buckets.
_EXPORTED_SLOTS = range(7, 36)


class Function(NamedTuple):
    """A function in a binary or library: `libc:malloc`."""

    target: str  # a path, or a library's name
    symbol: str

    def __str__(self) -> str:
        return f"{self.target}:{self.symbol}"


def parse_target(text: str) -> Function:
    """"libc:malloc" → ("libc", "malloc"); "/usr/bin/app:main" → ("/usr/bin/app", "main")."""
    target, sep, symbol = text.rpartition(":")
    if not sep or not target or not symbol or any(c.isspace() for c in symbol):
        raise OptionValueError(f"{text!r} is not TARGET:SYMBOL (e.g. libc:malloc or /usr/bin/app:main)")
    return Function(target, symbol)


def elf_section_names(path: str) -> list[str]:
    """Section names from an ELF file's section headers (32 or 64 bit, either byte order)."""
    with open(path, "rb") as f:
        ident = f.read(16)
        if len(ident) < 16 or ident[:4] != b"\x7fELF" or ident[4] not in (1, 2) or ident[5] not in (1, 2):
            raise BpfscopeError(errno.ENOEXEC, f"{path} is not an ELF file")
        wide, order = ident[4] == 2, "<" if ident[5] == 1 else ">"
        # e_shoff, then e_shentsize, e_shnum, e_shstrndx at the end of the header
        f.seek(0x28 if wide else 0x20)
        (shoff,) = struct.unpack(order + ("Q" if wide else "I"), f.read(8 if wide else 4))
        f.seek(0x3A if wide else 0x2E)
        shentsize, shnum, shstrndx = struct.unpack(order + "HHH", f.read(6))
        if not shoff:
            return []
        header = order + ("IIQQQQIIQQ" if wide else "IIIIIIIIII")
        if not shnum or shstrndx == 0xFFFF:  # more sections than fit: section 0 holds the real numbers
            first = _section_header(f, shoff, header)
            shnum, shstrndx = shnum or first[5], first[6] if shstrndx == 0xFFFF else shstrndx
        headers = [_section_header(f, shoff + i * shentsize, header) for i in range(min(shnum, 1 << 16))]
        strtab = headers[shstrndx]
        f.seek(strtab[4])
        names = f.read(strtab[5])
    return [names[h[0]: names.find(b"\0", h[0])].decode(errors="replace") for h in headers if h[0] < len(names)]


def _section_header(f: BinaryIO, offset: int, layout: str) -> tuple[int, ...]:
    f.seek(offset)
    return struct.unpack(layout, f.read(struct.calcsize(layout)))


def is_go_binary(path: str) -> bool:
    """True when the ELF file has the sections the Go linker writes (build info, build id, pclntab)."""
    return not _GO_SECTIONS.isdisjoint(elf_section_names(path))


@dataclass(frozen=True)
class LatencySnapshot:
    """Counters since attach: the histogram (in `unit`), calls timed and their total in ns, calls
    nested too deep to time, returns without an entry, entries lost to a full thread table, and
    probe runs the kernel skipped (Program.missed_runs)."""

    time: float
    unit: Unit
    slots: tuple[int, ...] = ()
    count: int = 0
    sum_ns: int = 0
    too_deep: int = 0
    unmatched: int = 0
    untracked: int = 0
    missed: int = 0

    @property
    def histogram(self) -> Log2Histogram:
        return Log2Histogram(self.slots, self.unit.label, total=self.sum_ns / self.unit.ns)

    def __sub__(self, earlier: LatencySnapshot) -> LatencySnapshot:
        return LatencySnapshot(
            self.time - earlier.time, self.unit, tuple(a - b for a, b in zip(self.slots, earlier.slots)),
            self.count - earlier.count, self.sum_ns - earlier.sum_ns, self.too_deep - earlier.too_deep,
            self.unmatched - earlier.unmatched, self.untracked - earlier.untracked, self.missed - earlier.missed,
        )


class FunctionLatency(Tool):
    """`with FunctionLatency("libc", "malloc") as f: f.snapshot().histogram`; detaches on exit.

    `target` is a path or a library name ("libc"); `pid` limits timing to one process (at attach
    and in the kernel); `unit` is the histogram's unit. `lost` counts the calls it could not time
    because its table of threads in a call was full."""

    NAME = "funclatency"
    HELP = "time a function in a binary or library as a log2 histogram (uprobes)"
    NEEDS = (("uprobes",),)
    CAPABILITIES = TRACE
    KIND = Kind.POLLING
    OPTIONS = (
        Option("function", "a binary path or a library name, and a function: libc:malloc, /usr/bin/app:main",
               parse_target, metavar="TARGET:SYMBOL", positional=True, required=True, example="libc:getpid"),
        PID.but(help="only calls made by this process"),
        Option("unit", "histogram unit (default: us)", str, default=Unit.USECS.value,
               choices=tuple(u.value for u in Unit), agent=False),
        INTERVAL.but(default=None, help="also print each interval's histogram, every S seconds"),
        DURATION,
        JSON.but(help="one JSON object per interval, and a final one"),
    )
    AGENT_KEY = "funclatency"
    AGENT_VALUES = {"unit": Unit.NSECS.value}  # the histogram in the finest unit: its buckets are in seconds
    AGENT_INSTANCES = ("function",)  # one instance per function, its pins in funclatency-<target>_<symbol>

    def __init__(self, target: str, symbol: str, *, pid: Optional[int] = None, unit: Unit = Unit.USECS,
                 pin_dir: Optional[str] = None) -> None:
        super().__init__(pin_dir=pin_dir)  # a histogram pinned there carries on from an earlier run
        self.path = resolve_binary(target)
        self.target = target
        self.symbol = symbol
        self.pid = pid
        self.unit = unit

    @classmethod
    def _from_options(cls, values: Mapping[str, Any], pin_dir: Optional[str]) -> FunctionLatency:
        function: Function = values["function"]
        return cls(function.target, function.symbol, pid=values["pid"], unit=Unit(values["unit"]), pin_dir=pin_dir)

    def _open(self) -> None:
        if is_go_binary(self.path):
            raise BpfscopeError(errno.EOPNOTSUPP, f"{self.path} is a Go binary: {GO_REFUSAL}")
        if self.pid is not None:
            check_pid(self.pid)
        spec = ObjectSpec.open(tool_object("funclatency"))
        spec.rodata["cfg_tgid"] = self.pid or 0
        spec.rodata["cfg_unit_ns"] = self.unit.ns
        spec.pin_maps(self.pin_dir, ["latencies"])
        self._obj = obj = spec.load()
        # Return probe first: a call entered between the two attaches then has no entry to leave open;
        # its return is counted as unmatched instead.
        for program, retprobe in (("time_return", True), ("time_entry", False)):
            self.attach(obj.programs[program].attach_uprobe(self.path, self.symbol, pid=self.pid, retprobe=retprobe))

    def snapshot(self) -> LatencySnapshot:
        now = time.monotonic()
        _, values = self.obj.maps["latencies"].lookup_batch_sum()  # type: ignore[attr-defined]
        row = values[0]
        return LatencySnapshot(
            now, self.unit, tuple(int(n) for n in row["slots"]), int(row["count"]), int(row["sum_ns"]),
            int(row["too_deep"]), int(row["unmatched"]), int(row["untracked"]), self.obj.missed_runs(),
        )

    @property
    def lost(self) -> int:
        """Calls not timed because the table of threads in a call was full."""
        return self.snapshot().untracked

    def as_dict(self, snap: LatencySnapshot) -> dict[str, Any]:
        """A JSON-ready view of a snapshot (or of an interval's delta)."""
        hist = snap.histogram
        return {
            "target": self.path,
            "symbol": self.symbol,
            "pid": self.pid,
            **hist.as_dict(),
            "sum_ns": snap.sum_ns,
            "too_deep": snap.too_deep,
            "unmatched": snap.unmatched,
            "untracked": snap.untracked,
            "missed": snap.missed,
        }

    def metrics(self) -> Iterator[Metric]:
        """bpfscope_function_latency_seconds: the histogram, in seconds, labelled by target and symbol."""
        from prometheus_client.core import HistogramMetricFamily

        snap = self.snapshot()
        buckets = Durations(self.unit, snap.slots, snap.count, snap.sum_ns).prometheus_buckets(_EXPORTED_SLOTS)
        family = HistogramMetricFamily("bpfscope_function_latency_seconds", "Time from a function's entry to its "
                                       "return (uprobes)", labels=["target", "symbol"])
        family.add_metric([self.target, self.symbol], buckets, snap.sum_ns / 1e9)
        yield family


TOOL = FunctionLatency
