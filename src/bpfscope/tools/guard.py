"""The XDP rate limiter: loads guard.bpf.o, pins its maps under /sys/fs/bpf/bpfscope/guard while it
runs, and reads its counters. Another process changes a running guard through those pins
(`RunningGuard`, and the tool's actions: `bpfscope guard allow|deny|unlist|set`): lists and limits are
maps, so nothing is reloaded.

One guard runs per machine. It holds an exclusive flock on its pin directory for as long as it
lives; the kernel drops the lock with the process, so a pin directory nobody holds locked is the
leftover of a killed guard: the next guard clears it and control commands call it not running."""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import ipaddress
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Optional

from .. import netdev
from ..btf import Kind as BtfKind
from ..btf import TypeCodec
from ..errors import BpfscopeError
from ..features import Feature
from ..maps import Map
from ..object import Object, ObjectSpec, tool_object
from ..pin import ensure_pin_dir, remove_pins, tool_pin_dir
from ..program import Program, XdpMode
from ..variants import Variant, choose
from ._base import DURATION, IFACE, INTERVAL, JSON, NET, XDP_MODE, Action, Kind, Option, OptionValueError, Tool
from .cidr import Network, cidr_key, source_name

if TYPE_CHECKING:
    from prometheus_client.core import Metric

__all__ = [
    "MAX_RATE",
    "PINNED_MAPS",
    "TOOL",
    "Counts",
    "Guard",
    "GuardControl",
    "Limit",
    "NoRunningGuardError",
    "Offender",
    "RunningGuard",
    "Snapshot",
    "limiter",
    "load_guard",
    "top_offenders",
]

PINNED_MAPS = ("settings", "allowed_cidrs", "denied_cidrs", "sources", "counts")
# 1/rate is kept in whole nanoseconds, and burst/rate must fit a u64 of nanoseconds.
MAX_RATE = 1_000_000_000
_LISTS = {"allow": "allowed_cidrs", "deny": "denied_cidrs"}
# limit_sources, or before Linux 5.12 limit_sources_locked: same verdicts, same counters. BPF atomics
# (compare-and-swap), or a bpf_spin_lock (stripes.bpf.h).
_FORMS = Variant(Feature.ATOMICS, ("limit_sources",), ("limit_sources_locked",))


def rate(text: str) -> int:
    """Packets per second, or back to back: a whole number from 1 to MAX_RATE."""
    try:
        value = int(text)
    except ValueError:
        raise OptionValueError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_RATE:
        raise OptionValueError(f"{text!r} must be from 1 to {MAX_RATE:,}")
    return value


def network(text: str) -> Network:
    """An address or a network, without host bits: 192.0.2.0/24, 2001:db8::/48, 10.1.2.3."""
    try:
        return ipaddress.ip_network(text)
    except ValueError as exc:
        raise OptionValueError(f"{text!r} is not a CIDR ({exc})") from None


class NoRunningGuardError(BpfscopeError):
    def __init__(self) -> None:
        super().__init__(errno.ESRCH, "no running guard: start `bpfscope guard --iface X` first")


@dataclass(frozen=True)
class Limit:
    """Packets per second per source (IPv4 /32, IPv6 /64), and how many may come back to back."""

    rate: int
    burst: int

    def __post_init__(self) -> None:
        for name in ("rate", "burst"):
            value = getattr(self, name)
            if not 1 <= value <= MAX_RATE:
                raise BpfscopeError(errno.EINVAL, f"{name} {value} is out of range (1 to {MAX_RATE:,})")


@dataclass(frozen=True)
class Counts:
    """struct guard_counts summed over CPUs; passed + dropped is every packet seen."""

    passed: int = 0
    dropped: int = 0
    would_drop: int = 0
    allowed: int = 0
    denied: int = 0

    def __sub__(self, other: Counts) -> Counts:
        return Counts(**{k: getattr(self, k) - getattr(other, k) for k in self.__dataclass_fields__})


@dataclass(frozen=True)
class SourceCount:
    passed: int
    dropped: int


@dataclass(frozen=True)
class Snapshot:
    """Counters at `time` (monotonic): totals, and every source that has lost a packet, by its raw
    20-byte key (formatted only for the few shown)."""

    time: float
    counts: Counts
    offenders: Mapping[bytes, SourceCount]


@dataclass(frozen=True)
class Offender:
    source: str
    passed: int
    dropped: int
    passed_per_s: float
    dropped_per_s: float


def load_guard(limit: Limit, *, dry_run: bool = False, counts_pin_dir: Optional[str] = None) -> Object:
    """guard.bpf.o loaded with its limit set; dry_run is frozen in .rodata, the limit stays writable.
    With `counts_pin_dir`, the counters pinned there by an earlier run are taken over."""
    spec = ObjectSpec.open(tool_object("guard"))
    choose(spec, _FORMS)
    spec.rodata["cfg_dry_run"] = dry_run
    spec.pin_maps(counts_pin_dir, ["counts"])
    obj = spec.load()
    try:
        obj.maps["settings"][0] = {"rate": limit.rate, "burst": limit.burst, "lists": 0}
    except BaseException:
        obj.close()
        raise
    return obj


def limiter(obj: Object) -> Program:
    """The program of a loaded guard.bpf.o to attach: whichever of the two forms this kernel got."""
    programs = obj.programs
    return programs["limit_sources"] if "limit_sources" in programs else programs["limit_sources_locked"]


class GuardControl:
    """What can be done to a guard through its maps, whether this process loaded them (Guard) or
    opened their pins (RunningGuard): read the counters, edit the lists, set the limit."""

    def __init__(self, maps: Mapping[str, Map]) -> None:
        self.maps = maps

    @property
    def limit(self) -> Limit:
        value = self.maps["settings"][0]
        return Limit(value.rate, value.burst)

    def set_limit(self, *, rate: Optional[int] = None, burst: Optional[int] = None) -> Limit:
        """Writes a new rate and/or burst; the program reads them on the next packet."""
        current = self.limit
        new = Limit(rate if rate is not None else current.rate, burst if burst is not None else current.burst)
        self._update_settings(rate=new.rate, burst=new.burst)
        return new

    def add(self, which: str, network: Network) -> None:
        """Puts `network` on the "allow" or "deny" list (a source on both is denied)."""
        self.maps[_LISTS[which]][cidr_key(network)] = 1
        self._sync_lists()

    def unlist(self, network: Network) -> list[str]:
        """Takes `network` off both lists; returns the lists it was on (exact prefix, not a match)."""
        key = cidr_key(network)
        removed = [which for which, name in _LISTS.items() if self.maps[name].delete(key)]
        self._sync_lists()
        return removed

    def _sync_lists(self) -> None:
        """Tells the program which lists have entries, read from the lists themselves, so an empty
        list costs no lookup per packet and two shells editing lists cannot leave it wrong."""
        settings = self.maps["settings"].value
        assert isinstance(settings, TypeCodec)  # guard.bpf.o always carries BTF
        bits = settings.btf.find("guard_lists", BtfKind.ENUM)
        assert bits is not None
        bit_of = {name.removeprefix("LIST_").lower(): value for name, value in bits.enumerators}
        lists = sum(bit_of[which] for which, name in _LISTS.items() if not self.maps[name].empty())
        self._update_settings(lists=lists)

    def _update_settings(self, **fields: int) -> None:
        # One 24-byte write; `set` and a list edit racing from two shells could lose one field.
        self.maps["settings"][0] = dataclasses.replace(self.maps["settings"][0], **fields)

    def listed(self, which: str) -> list[str]:
        """The networks on the "allow" or "deny" list."""
        keys, _ = self.maps[_LISTS[which]].lookup_batch()
        return sorted(source_name(key.tobytes()) for key in keys)

    def snapshot(self) -> Snapshot:
        now = time.monotonic()
        _, totals = self.maps["counts"].lookup_batch_sum()  # type: ignore[attr-defined]
        counts = Counts(**{name: int(totals[0][name]) for name in Counts.__dataclass_fields__})
        keys, values = self.maps["sources"].lookup_batch()
        lost = values["dropped"] > 0
        raw = keys[lost].tobytes()
        size = keys.dtype.itemsize
        offenders = {
            raw[i * size : (i + 1) * size]: SourceCount(int(p), int(d))
            for i, (p, d) in enumerate(zip(values["passed"][lost], values["dropped"][lost]))
        }
        return Snapshot(now, counts, offenders)


def top_offenders(now: Snapshot, earlier: Snapshot, n: int = 10) -> list[Offender]:
    """The `n` sources that lost the most packets between two snapshots (then the most in all)."""
    seconds = (now.time - earlier.time) or 1.0
    rows = []
    for key, count in now.offenders.items():
        before = earlier.offenders.get(key, SourceCount(0, 0))
        rows.append((count.dropped - before.dropped, count.dropped, key, count, before))
    rows.sort(key=lambda row: (row[0], row[1]), reverse=True)
    return [
        Offender(source_name(key), count.passed, count.dropped,
                 (count.passed - before.passed) / seconds, (count.dropped - before.dropped) / seconds)
        for _, _, key, count, before in rows[:n]
    ]


_RATE = Option("rate", "packets per second each source (IPv4 /32, IPv6 /64) may send", rate, metavar="PPS",
               required=True, example="1000")
_BURST = Option("burst", "packets a quiet source may send back to back (default: the rate)", rate, metavar="N")
_CIDR = Option("cidr", "an address or network: 192.0.2.0/24, 2001:db8::/48", network, metavar="CIDR", positional=True)


class Guard(GuardControl, Tool):
    """`with Guard("eth1", limit=Limit(1000, 2000)) as guard: guard.snapshot()`. On exit it detaches
    and removes its pins (but the counters', with `keep_counts`). `mode` says which XDP mode ran once
    it is open."""

    NAME = "guard"
    HELP = "drop floods: a per-source rate limit with allow and deny lists (XDP)"
    NEEDS = (("xdp_link",),)
    CAPABILITIES = NET
    KIND = Kind.POLLING
    OPTIONS = (
        # Required, never the default route's: a guard drops traffic. The agent's config names it `interface`.
        IFACE.but(help="the interface to guard", required=True, agent=True, config_name="interface"),
        _RATE,
        _BURST,
        Option("dry_run", "count what would be dropped, drop nothing"),
        XDP_MODE,
        Option("allow", "let CIDR through unlimited (any number of times)", network, default=(), metavar="CIDR",
               many=True),
        Option("deny", "drop everything from CIDR, even if allowed (any number of times)", network, default=(),
               metavar="CIDR", many=True),
        INTERVAL,
        DURATION,
        JSON,
        Option("pin_dir", f"where the guard's maps are pinned (default: {tool_pin_dir('guard')}; the agent's "
               "guard: its pin_dir/guard)", str, metavar="DIR", agent=False),
    )
    AGENT_KEY = "guard"
    VARIANT = _FORMS
    ACTIONS = (
        Action("allow", "let CIDR through unlimited (the deny list wins over the allow list)", (_CIDR,), ("pin_dir",)),
        Action("deny", "drop everything from CIDR (the deny list wins over the allow list)", (_CIDR,), ("pin_dir",)),
        Action("unlist", "take CIDR off the allow and deny lists", (_CIDR,), ("pin_dir",)),
        Action("set", "change the rate and burst", (_RATE.but(help="packets per second per source", required=False),
                                                    _BURST.but(help="packets back to back")), ("pin_dir",)),
    )

    def __init__(
        self, iface: str, *, limit: Limit, dry_run: bool = False, mode: XdpMode = XdpMode.AUTO,
        allow: Iterable[Network] = (), deny: Iterable[Network] = (), pin_dir: Optional[str] = None,
        keep_counts: bool = False,
    ) -> None:
        GuardControl.__init__(self, {})
        Tool.__init__(self, pin_dir=pin_dir or tool_pin_dir("guard"))
        self.iface = iface
        self.keep_counts = keep_counts  # the counters' pin outlives this guard, for the next (the agent's)
        self.initial_limit = limit
        self.dry_run = dry_run
        self.mode = mode
        self.allow, self.deny = tuple(allow), tuple(deny)  # on the lists from the start
        self._lock = -1

    @classmethod
    def _from_options(cls, values: Mapping[str, Any], pin_dir: Optional[str]) -> Guard:
        # The agent's guard (pin_dir given) keeps its counts across restarts; its pins are its own.
        return cls(values["iface"], limit=Limit(values["rate"], values["burst"] or values["rate"]),
                   dry_run=bool(values["dry_run"]), mode=XdpMode(values["mode"]), allow=values["allow"],
                   deny=values["deny"], pin_dir=pin_dir or values["pin_dir"], keep_counts=pin_dir is not None)

    @classmethod
    def act(cls, action: str, values: Mapping[str, Any]) -> str:
        with RunningGuard(values["pin_dir"]) as guard:
            if action == "set":
                if values["rate"] is None and values["burst"] is None:
                    raise BpfscopeError(errno.EINVAL, "give --rate, --burst or both")
                before = guard.limit
                after = guard.set_limit(rate=values["rate"], burst=values["burst"])
                return f"guard: rate {after.rate:,}/s, burst {after.burst:,} (was {before.rate:,}/s, {before.burst:,})"
            cidr = values["cidr"]
            if action == "unlist":
                lists = guard.unlist(cidr)
                if not lists:
                    raise BpfscopeError(errno.ENOENT, f"{cidr} is on neither list")
                return f"guard: {cidr} off the {' and '.join(lists)} list"
            guard.add(action, cidr)
            return f"guard: {cidr} on the {action} list"

    def _open(self) -> None:
        netdev.ifindex(self.iface)  # an unknown interface fails before anything is pinned or loaded
        assert self.pin_dir is not None
        self._lock_pin_dir(self.pin_dir)
        self._obj = obj = load_guard(self.initial_limit, dry_run=self.dry_run,
                                     counts_pin_dir=self.pin_dir if self.keep_counts else None)
        self.maps = obj.maps
        for name in PINNED_MAPS:
            if not (self.keep_counts and name == "counts"):
                self.maps[name].pin(os.path.join(self.pin_dir, name))
        for which, networks in (("allow", self.allow), ("deny", self.deny)):
            for listed in networks:
                self.add(which, listed)
        self.mode = self.attach(limiter(obj).attach_xdp(self.iface, mode=self.mode)).mode

    def _lock_pin_dir(self, pin_dir: str) -> None:
        ensure_pin_dir(pin_dir)
        os.makedirs(pin_dir, exist_ok=True)
        self._lock = os.open(pin_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            self._lock = -1
            raise BpfscopeError(errno.EBUSY, "a guard is already running; change it with `bpfscope guard "
                                "allow|deny|unlist|set`, or stop it first") from None
        self._unpin(keep=("counts",) if self.keep_counts else ())  # pins of a guard that was killed

    def _unpin(self, keep: tuple[str, ...]) -> None:
        assert self.pin_dir is not None
        for name in os.listdir(self.pin_dir):
            if name not in keep:
                os.unlink(os.path.join(self.pin_dir, name))

    def close(self) -> None:
        super().close()
        self.maps = {}
        if self._lock >= 0:
            if self.keep_counts:
                self._unpin(keep=("counts",))
            else:
                assert self.pin_dir is not None
                remove_pins(self.pin_dir)
            os.close(self._lock)
            self._lock = -1

    def metrics(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        counts = self.snapshot().counts
        verdicts = CounterMetricFamily("bpfscope_guard_packets", "Packets the guard passed or dropped (XDP); "
                                       "would_drop: over the limit in dry-run mode", labels=["interface", "verdict"])
        for verdict in ("passed", "dropped", "would_drop"):
            verdicts.add_metric([self.iface, verdict], getattr(counts, verdict))
        lists = CounterMetricFamily("bpfscope_guard_list_matches", "Packets from an allowed or denied network",
                                    labels=["interface", "list"])
        lists.add_metric([self.iface, "allow"], counts.allowed)
        lists.add_metric([self.iface, "deny"], counts.denied)
        yield from (verdicts, lists)


TOOL = Guard


class RunningGuard(GuardControl):
    """The guard another process runs, through its pins: `with RunningGuard() as guard: guard.add(...)`.
    Raises NoRunningGuardError when none runs."""

    def __init__(self, pin_dir: Optional[str] = None) -> None:
        self.pin_dir = pin_dir or tool_pin_dir("guard")
        self._pinned: dict[str, Map] = {}
        super().__init__(self._pinned)
        try:
            lock = os.open(self.pin_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NoRunningGuardError() from None
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # the guard holds it: running
            else:
                raise NoRunningGuardError()  # pins a killed guard left behind
            for name in PINNED_MAPS:
                self._pinned[name] = Map.from_pin(os.path.join(self.pin_dir, name))
        except OSError as exc:
            self.close()
            if exc.errno == errno.ENOENT:  # the guard stopped while we opened its pins
                raise NoRunningGuardError() from None
            raise
        except BaseException:
            self.close()
            raise
        finally:
            os.close(lock)

    def close(self) -> None:
        for m in self._pinned.values():
            m.close()
        self._pinned.clear()

    def __enter__(self) -> RunningGuard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
