"""The one shape of a bpfscope tool. A tool declares once what it is (name, help, kernel needs,
capabilities, kind, options) and the CLI runner, `doctor` and the agent read that declaration; it
holds a loaded object, the links that attach its programs and the ring buffers it reads, and
`close()` undoes them all. `stats()` always says what the tool could not see: `lost` (records or
counts the programs could not deliver) and `missed` (runs of its programs the kernel skipped)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import enum
import errno
import os
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Mapping, Optional, TypeVar

from .._privileges import Capability
from ..errors import BpfscopeError
from ..link import TcDirection, TcMode, XdpMode

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from ..agent.containers import ContainerResolver
    from ..link import Link
    from ..object import Object
    from ..program import Program
    from ..ringbuf import RingBuffer
    from ..variants import Variant

__all__ = [
    "CGROUP",
    "COMM",
    "COMM_BYTES",
    "CORE_NEEDS",
    "DURATION",
    "IFACE",
    "INTERVAL",
    "JSON",
    "NET",
    "PID",
    "RING_BYTES",
    "TC_MODE",
    "TRACE",
    "XDP_MODE",
    "Action",
    "Kind",
    "Option",
    "OptionValueError",
    "Stats",
    "Tool",
    "cgroup_id",
    "check_pid",
    "comm_name",
    "pid_number",
    "positive_float",
    "resolve_iface",
    "ring_bytes",
]

COMM_BYTES = 16  # TASK_COMM_LEN, NUL included

# Capabilities: a network tool's and a tracing tool's.
NET = (Capability.BPF, Capability.NET_ADMIN)
TRACE = (Capability.BPF, Capability.PERFMON)
# What every tool needs, as doctor's row keys: they all load CO-RE objects. `doctor` adds it to NEEDS.
CORE_NEEDS = (("btf",), ("bpf_syscall",))


class Kind(enum.Enum):
    """How a tool's results come: counters read at each interval, or records streamed through a ring."""

    POLLING = "polling"
    STREAMING = "streaming"


@dataclass(frozen=True)
class Stats:
    """What a tool could not see, and what it read."""

    lost: int  # records or counts the programs saw and could not deliver (a full ring or counters map)
    missed: int  # runs of the tool's programs the kernel skipped (Program.missed_runs)
    received: Optional[int] = None  # records read from the tool's rings; None where it reads none


# --- options -------------------------------------------------------------------------------------


class OptionValueError(argparse.ArgumentTypeError, ValueError):
    """A value an option cannot take; the message says why. argparse shows it as it is, and the
    agent's config names the field it came from."""


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise OptionValueError(f"{text!r} is not a number") from None
    if not value > 0:
        raise OptionValueError(f"{text!r} must be greater than 0")
    return value


def pid_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise OptionValueError(f"{text!r} is not a process id") from None
    if value <= 0:
        raise OptionValueError(f"{text!r} must be greater than 0")
    return value


def ring_bytes(text: str) -> int:
    """A ring buffer's size in bytes: the kernel takes only a power of 2 that is a multiple of the page size."""
    try:
        value = int(text)
    except ValueError:
        raise OptionValueError(f"{text!r} is not a whole number") from None
    if value < 4096 or value & (value - 1):
        raise OptionValueError(f"{text!r} must be a power of 2 of at least 4096")
    return value


def comm_name(text: str) -> str:
    """A task's comm as the kernel keeps it: 1 to 15 bytes of UTF-8, no NUL."""
    encoded = text.encode()
    if not encoded or len(encoded) >= COMM_BYTES or b"\0" in encoded:
        raise OptionValueError(f"{text!r} must be 1 to {COMM_BYTES - 1} bytes (a comm's length)")
    return text


def cgroup_id(text: str) -> int:
    """The id of the cgroup v2 directory `text` names, which is what bpf_get_current_cgroup_id() returns
    (its inode number): a path under the cgroup v2 mount, or one relative to it as /proc/PID/cgroup shows
    it (/system.slice/nginx.service)."""
    from ..mounts import cgroup2_path

    root = cgroup2_path()
    if root is None:
        raise OptionValueError("no cgroup v2 file system is mounted")
    if not text:
        raise OptionValueError("'' is not a cgroup's path")

    def inside(path: str) -> bool:
        return path == root or path.startswith(root.rstrip("/") + "/")

    path = os.path.realpath(text)
    if not inside(path):
        relative = os.path.realpath(os.path.join(root, text.lstrip("/")))
        if inside(relative) and os.path.isdir(relative):
            path = relative
    if not os.path.isdir(path):
        raise OptionValueError(f"{text}: no such directory")
    if not inside(path):
        raise OptionValueError(f"{text}: not a cgroup v2 directory (under {root})")
    return os.stat(path).st_ino


def check_pid(pid: int) -> None:
    """Raises unless `pid` is a running process (a thread group leader: the kernel filters by tgid)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            tgid = next((int(line.split()[1]) for line in f if line.startswith("Tgid:")), pid)
    except (FileNotFoundError, ProcessLookupError):
        raise BpfscopeError(errno.ESRCH, f"no process with pid {pid}") from None
    if tgid != pid:
        raise BpfscopeError(errno.EINVAL, f"{pid} is a thread of process {tgid}; give --pid {tgid}")


@dataclass(frozen=True)
class Option:
    """One option of a tool, declared once: the CLI makes `--name` (and `short`) of it, and the agent
    reads the key `name` of the tool's section in its config, both through `parse`."""

    name: str  # the attribute and the config key; the flag is --name with "-" for "_"
    help: str
    parse: Optional[Callable[[str], Any]] = None  # text → value, raising OptionValueError; None: an on/off flag
    default: Any = None
    short: Optional[str] = None  # "-p"
    metavar: Optional[str] = None
    choices: Optional[tuple[str, ...]] = None
    hidden: bool = False  # left out of --help: a knob for tests and benchmarks
    agent: bool = True  # also a key of the tool's section in the agent's config
    cli: bool = True  # also a flag of the CLI (False: a bound only the agent needs)
    required: bool = False  # the tool cannot run without it (the CLI says "give --name", the agent's config names it)
    example: Optional[str] = None  # a value of a required option, for the registry's tests and the docs
    many: bool = False  # given any number of times (a YAML list in the agent): its value is a tuple
    positional: bool = False  # given as a bare argument (METAVAR), not as --name
    config_name: Optional[str] = None  # its key in the agent's config, where that is not `name`
    aliases: tuple[str, ...] = ()  # older flags that still work, left out of --help (execsnoop's --name for --comm)

    @property
    def negated(self) -> bool:
        """An on/off flag that is on unless turned off: the CLI writes it `--no-NAME`."""
        return self.parse is None and self.default is True

    @property
    def flag(self) -> str:
        return ("--no-" if self.negated else "--") + self.name.replace("_", "-")

    @property
    def shown(self) -> str:
        """How a user gives it: its flag, or a positional's metavar."""
        return (self.metavar or self.name.upper()) if self.positional else self.flag

    @property
    def key(self) -> str:
        """Its key in the tool's section of the agent's config."""
        return self.config_name or self.name

    def but(self, **changes: Any) -> Option:
        """This declaration with some fields changed (a tool's own default or help)."""
        return dataclasses.replace(self, **changes)

    def from_config(self, value: object) -> Any:
        """A value from YAML, checked as the CLI checks its text; raises OptionValueError."""
        if self.many:
            return tuple(self._one(item) for item in (value if isinstance(value, list) else [value]))
        return self._one(value)

    def _one(self, value: object) -> Any:
        if self.parse is None:
            if not isinstance(value, bool):
                raise OptionValueError(f"must be true or false, not {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise OptionValueError(f"must be a single value, not {value!r}")
        parsed = self.parse(str(value))
        if self.choices is not None and parsed not in self.choices:
            raise OptionValueError(f"must be one of {', '.join(self.choices)}, not {value!r}")
        return parsed


@dataclass(frozen=True)
class Action:
    """A subcommand that changes a running instance of the tool from another shell (`bpfscope guard
    allow CIDR`): the runner parses its options and calls Tool.act instead of running the tool."""

    name: str
    help: str
    options: tuple[Option, ...] = ()  # its own, given after its name
    uses: tuple[str, ...] = ()  # the tool's options it reads as well (given before its name: --pin-dir)


# One name for one filter across the tools (and `short` the same everywhere).
PID = Option("pid", "only this process (all its threads)", pid_number, short="-p", metavar="PID")
COMM = Option("comm", f"only tasks whose comm is exactly NAME (at most {COMM_BYTES - 1} bytes)", comm_name,
              short="-c", metavar="NAME")
IFACE = Option("iface", "interface to watch (default: the interface of the default route)", str, short="-i",
               metavar="IFACE", agent=False)  # the agent's config names a list: `interfaces`, one instance each
XDP_MODE = Option("mode", "XDP mode: auto tries native, then generic (default: auto)", str, default=XdpMode.AUTO.value,
                  choices=tuple(m.value for m in XdpMode))
TC_MODE = Option("mode", "tc attachment: auto uses a tcx link where the kernel has one, else clsact", str,
                 default=TcMode.AUTO.value, choices=tuple(m.value for m in TcMode))
CGROUP = Option("cgroup", "only tasks in the cgroup v2 at PATH (under its mount, or as /proc/PID/cgroup shows it)",
                cgroup_id, metavar="PATH")
# What the runner reads: how long, how often, and JSON or text. Never in the agent's config.
INTERVAL = Option("interval", "seconds between updates (default: 1)", positive_float, default=1.0, metavar="S",
                  agent=False)
DURATION = Option("duration", "stop after S seconds", positive_float, short="-d", metavar="S", agent=False)
JSON = Option("json", "one JSON object per interval, and a final one", agent=False)
# The ring's size, for tests that need it to overflow and benchmarks that need it large; the agent has its own.
RING_BYTES = Option("ring_bytes", "bytes of the ring buffer (a power of 2)", ring_bytes, hidden=True, agent=False)


def resolve_iface(name: Optional[str]) -> str:
    """`name`, or the interface of the default route; raises InterfaceNotFoundError (listing the
    interfaces that exist) unless it exists, so that a tool stops before it loads anything."""
    from ..netdev import default_route_interface, ifindex, interfaces

    if not name:
        name = default_route_interface()
        if not name:
            raise BpfscopeError(errno.ENODEV, f"no default route; give --iface (interfaces: {', '.join(interfaces())})")
    ifindex(name)
    return name


# --- the tool ------------------------------------------------------------------------------------

_T = TypeVar("_T", bound="Tool")
_L = TypeVar("_L", bound="Link")


class Tool:
    """A tool: `with Tool(...) as tool:` (or `open()`/`close()`) loads and attaches; closing undoes it
    all, is safe twice, and a failed `open()` leaves nothing behind.

    A subclass declares the class attributes below, builds itself from option values in
    `_from_options`, and in `_open` checks its input first, then loads (`self._obj = spec.load()`),
    then attaches (`self.attach(link)`) and opens its rings (`self.ring(reader)`)."""

    NAME: ClassVar[str]  # == its module's name == its BPF object's basename
    HELP: ClassVar[str]  # one line, for `bpfscope --help`
    NEEDS: ClassVar[tuple[tuple[str, ...], ...]]  # doctor's row keys beyond CORE_NEEDS, each a group of alternatives
    CAPABILITIES: ClassVar[tuple[Capability, ...]]
    KIND: ClassVar[Kind]
    OPTIONS: ClassVar[tuple[Option, ...]] = ()
    AGENT_KEY: ClassVar[Optional[str]] = None  # its section under the agent config's `tools:`; None: no agent use
    AGENT_VALUES: ClassVar[Mapping[str, Any]] = {}  # option values the agent fixes (counting in the kernel)
    # A tool the agent runs several times: its section is a list, and these options tell the instances apart
    # (each has its own series and pin directory). A tool that takes `iface` runs once per interface instead.
    AGENT_INSTANCES: ClassVar[tuple[str, ...]] = ()
    VARIANT: ClassVar[Optional[Variant]] = None  # programs shipped in two forms (variants.choose)
    ACTIONS: ClassVar[tuple[Action, ...]] = ()  # subcommands that change a running instance (Tool.act)

    def __init__(self, *, pin_dir: Optional[str] = None) -> None:
        self.pin_dir = pin_dir  # maps the tool pins here carry on from an earlier run (the agent's)
        # The agent's (ToolSource sets it before open()): cgroup ids as container labels in metrics().
        self.containers: Optional[ContainerResolver] = None
        self._obj: Optional[Object] = None
        self._links: list[Link] = []
        self._rings: list[RingBuffer] = []
        self._notes: list[str] = []

    # --- building and opening ---

    @classmethod
    def declares(cls, name: str) -> bool:
        """Whether the tool takes option `name`."""
        return any(option.name == name for option in cls.OPTIONS)

    @classmethod
    def per_interface(cls) -> bool:
        """Whether the agent runs it once on each interface its section names in `interfaces:`: it
        takes --iface, and the agent's config does not name that as a value of its own."""
        return any(option.name == "iface" and not option.agent for option in cls.OPTIONS)

    @classmethod
    def from_options(cls: type[_T], options: Mapping[str, Any], *, pin_dir: Optional[str] = None) -> _T:
        """The tool as `options` (values by Option.name, from the CLI or the agent's config) ask for; a
        required option is checked and a declared `iface` resolved here, before anything loads."""
        values: dict[str, Any] = {}
        for option in cls.OPTIONS:
            value = options.get(option.name)
            if value is None and option.required:
                raise BpfscopeError(errno.EINVAL, f"give {option.shown}: {option.help}")
            value = option.default if value is None else value
            values[option.name] = tuple(value or ()) if option.many else value
        if "iface" in values:
            values["iface"] = resolve_iface(values["iface"])
        return cls._from_options(values, pin_dir)

    @classmethod
    def act(cls, action: str, values: Mapping[str, Any]) -> str:
        """Does `action` (one of ACTIONS) to the running instance, with the values of the options it
        takes; returns what to tell the user."""
        raise NotImplementedError(f"{cls.NAME} has no action {action!r}")

    @classmethod
    def _from_options(cls: type[_T], values: Mapping[str, Any], pin_dir: Optional[str]) -> _T:
        raise NotImplementedError(f"{cls.__name__} cannot be built from options")

    def open(self: _T) -> _T:
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def _open(self) -> None:
        raise NotImplementedError

    def attach(self, link: _L) -> _L:
        """Keeps `link`, to close it first."""
        self._links.append(link)
        return link

    def ring(self, reader: RingBuffer) -> RingBuffer:
        """Keeps `reader`, to close it before the object that owns its map."""
        self._rings.append(reader)
        return reader

    def attach_tc(self, iface: str, programs: Mapping[TcDirection, Program], mode: TcMode) -> TcMode:
        """Attaches each program to its tc hook of `iface` and returns how: TCX or CLSACT. The filters a
        killed bpfscope left are removed first; a note says so, and says when AUTO found no tcx links."""
        from ..link import remove_stale_tc_filters

        for removed in remove_stale_tc_filters():
            self.note(f"removed {removed}, left by a bpfscope that was killed")
        used = mode
        for direction, program in programs.items():
            used = self.attach(program.attach_tc(iface, direction=direction, mode=mode)).mode
        if mode is TcMode.AUTO and used is TcMode.CLSACT:
            self.note(f"this kernel has no tcx links (Linux 6.6+); attached to {iface} with clsact + cls_bpf")
        return used

    def note(self, text: str) -> None:
        """Something the user should know about how the tool runs (a fallback, a clean-up): the CLI
        prints each note on stderr once the tool is open, the agent logs it."""
        self._notes.append(text)

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(self._notes)

    @property
    def obj(self) -> Object:
        assert self._obj is not None, "open() first"
        return self._obj

    @property
    def links(self) -> tuple[Link, ...]:
        return tuple(self._links)

    @property
    def rings(self) -> tuple[RingBuffer, ...]:
        return tuple(self._rings)

    @property
    def kind(self) -> Kind:
        """How this instance's results come (a streaming tool may count instead: opensnoop --count)."""
        return self.KIND

    def close(self) -> None:
        """Links first, so the programs stop before what they write to goes; the rings' readers before
        the object, which owns their maps."""
        links, self._links = self._links, []
        for link in links:
            with contextlib.suppress(OSError):  # one that cannot detach (its interface gone) must not hold up the rest
                link.close()
        rings, self._rings = self._rings, []
        for reader in rings:
            reader.close()
        if self._obj is not None:
            self._obj.close()
            self._obj = None

    def __enter__(self: _T) -> _T:
        return self.open()

    def __exit__(
        self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.close()

    # --- reading ---

    def snapshot(self) -> Any:
        """A polling tool: its counters now (an object with `as_dict()` for the default view)."""
        raise NotImplementedError(f"{self.NAME} is not a polling tool")

    def poll(self, timeout_ms: int = 100) -> Any:
        """A streaming tool: the next batch of records (a sized batch, maybe empty), waiting up to `timeout_ms`."""
        raise NotImplementedError(f"{self.NAME} is not a streaming tool")

    def flush(self) -> Any:
        """A streaming tool, at the end of a run: the records it still holds back (one that pairs
        records waits for the second of a pair); by default none."""
        return ()

    def tally(self, batch: Any) -> None:
        """A streaming tool in the agent: counts a batch from poll() into what metrics() reports. The
        agent's reader thread calls it between scrapes, never while metrics() runs. By default the
        batch is only drained (the ring's families still count it)."""

    # --- what it saw ---

    def lost_by_ring(self) -> dict[str, int]:
        """For each ring buffer map of the object, the records its programs could not deliver:
        DEFINE_RINGBUF's counter beside it (`<ring>_lost`), over all CPUs."""
        from ..maps import MapType

        maps = self.obj.maps
        rings = [name for name, m in maps.items() if m.type == MapType.RINGBUF and f"{name}_lost" in maps]
        return {name: sum(int(v) for v in maps[f"{name}_lost"].lookup(0)) for name in rings}

    @property
    def lost(self) -> int:
        """Records the programs could not deliver (all rings)."""
        return sum(self.lost_by_ring().values())

    def received_by_ring(self) -> dict[str, int]:
        """For each ring the tool reads, the records read from it."""
        return {reader.name: reader.received for reader in self._rings}

    def stats(self) -> Stats:
        received = sum(self.received_by_ring().values()) if self._rings else None
        return Stats(lost=self.lost, missed=self.obj.missed_runs(), received=received)

    def metrics(self) -> Iterable[Metric]:
        """The tool's own Prometheus families for the agent (which adds lost and missed to every tool's)."""
        return ()
