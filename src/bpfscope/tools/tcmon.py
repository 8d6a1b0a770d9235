"""The tc traffic monitor: loads tcmon.bpf.o with its thresholds frozen in .rodata, writes the rules
(denied networks and ports, payload patterns) into its maps, attaches it to ingress and egress of one
interface, and reads the events it streams through its ring buffer. Detection is all in the kernel;
this module configures it and turns records into `Event`s.

Rules come from a YAML file (see tcmon.yaml beside this module). `load_rules` validates all of it
before anything is written, and every error names the file and line; `Monitor.apply` then rewrites
the maps in place, so a running monitor takes new rules without detaching."""

from __future__ import annotations

import errno
import ipaddress
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional, Union

import numpy as np
import yaml

from .. import netdev
from ..errors import BpfscopeError
from ..features import Feature
from ..object import ObjectSpec, tool_object
from ..program import Program, TcDirection, TcMode
from ..ringbuf import RingBuffer
from ..variants import Variant, choose
from ._base import (
    DURATION,
    IFACE,
    INTERVAL,
    JSON,
    NET,
    RING_BYTES,
    TC_MODE,
    Kind,
    Option,
    OptionValueError,
    Tool,
    positive_float,
)
from .cidr import Network, cidr_key

if TYPE_CHECKING:
    from prometheus_client.core import Metric

__all__ = [
    "DEFAULT_RING_BYTES",
    "DEFAULT_RULES",
    "MAX_PATTERNS",
    "PATTERN_BYTES",
    "Counts",
    "DeniedNetwork",
    "DeniedPort",
    "Event",
    "Monitor",
    "Pattern",
    "Rules",
    "RulesError",
    "TOOL",
    "Thresholds",
    "load_rules",
    "parse_rules",
    "port_count",
]

DEFAULT_RULES = Path(__file__).with_name("tcmon.yaml")
MAX_PATTERNS = 16  # MAX_PATTERNS and PATTERN_BYTES in tcmon.bpf.c
PATTERN_BYTES = 16
DEFAULT_RING_BYTES = 1 << 18
NSEC_PER_SEC = 1_000_000_000

_PROTOCOL_NUMBERS = {"tcp": 6, "udp": 17}
_PROTOCOL_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}
_PORT_PROTOCOL_BITS = {"tcp": 1, "udp": 2}  # struct port_rule.protocols


# --- rules -------------------------------------------------------------------------------------


class RulesError(BpfscopeError):
    """A rules file that cannot be used: unreadable, malformed YAML, or a bad entry. The message
    starts with `file:line:` where a line is known."""

    def __init__(self, path: str, line: Optional[int], message: str, err: int = errno.EINVAL) -> None:
        where = f"{path}:{line}" if line else path
        super().__init__(err, f"{where}: {message}")
        self.path = path
        self.line = line


@dataclass(frozen=True)
class DeniedNetwork:
    network: Network
    line: int

    def describe(self) -> str:
        return f"denied network {self.network}"


@dataclass(frozen=True)
class DeniedPort:
    port: int
    protocols: tuple[str, ...]  # ("tcp",), ("udp",) or ("tcp", "udp")
    line: int

    def describe(self) -> str:
        which = self.protocols[0] if len(self.protocols) == 1 else "tcp+udp"
        return f"denied port {self.port}/{which}"


@dataclass(frozen=True)
class Pattern:
    """`data` (1 to 16 bytes) at the very start of a TCP or UDP payload; `protocol` and `port`
    (either end) narrow it when given."""

    name: Optional[str]
    data: bytes
    protocol: Optional[str]
    port: Optional[int]
    line: int

    def describe(self) -> str:
        where = f" on {self.protocol or 'tcp+udp'}" + (f"/{self.port}" if self.port else "")
        return f"pattern {repr(self.name) + ' ' if self.name else ''}{self.data!r}{where}"


Rule = Union[DeniedNetwork, DeniedPort, Pattern]


@dataclass(frozen=True)
class Rules:
    """A validated rules file. A rule's number, which events carry, is its index in `all`."""

    path: str
    networks: tuple[DeniedNetwork, ...] = ()
    ports: tuple[DeniedPort, ...] = ()
    patterns: tuple[Pattern, ...] = ()

    @property
    def all(self) -> tuple[Rule, ...]:
        return (*self.networks, *self.ports, *self.patterns)

    def summary(self) -> str:
        def count(n: int, what: str) -> str:
            return f"{n} {what}{'' if n == 1 else 's'}"

        return ", ".join([count(len(self.networks), "denied network"), count(len(self.ports), "denied port"),
                          count(len(self.patterns), "pattern")])


def load_rules(path: Union[str, Path]) -> Rules:
    """Reads and validates a rules file; raises RulesError naming the file and line."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RulesError(name, None, "no such rules file", errno.ENOENT) from None
    except UnicodeDecodeError as exc:
        raise RulesError(name, None, f"not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise RulesError(name, None, exc.strerror or str(exc), exc.errno or errno.EIO) from None
    return parse_rules(text, name)


def parse_rules(text: str, name: str = "<rules>") -> Rules:
    """Validates rules given as YAML text; `name` is what errors call the file."""
    return _RulesParser(name).parse(text)


class _RulesParser:
    """Walks the composed YAML nodes rather than the loaded objects, because only nodes remember
    the line they came from."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._scalars = yaml.SafeLoader("")

    def error(self, node: Optional[yaml.Node], message: str) -> RulesError:
        return RulesError(self.name, node.start_mark.line + 1 if node is not None else None, message)

    def parse(self, text: str) -> Rules:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else None
            raise RulesError(self.name, line, f"malformed YAML: {exc.problem or exc.context}") from None
        except yaml.YAMLError as exc:
            raise RulesError(self.name, None, f"malformed YAML: {exc}") from None
        if root is None or self._is_null(root):
            return Rules(self.name)
        top = self.mapping(root, "the rules file", ("deny", "patterns"))
        networks: list[DeniedNetwork] = []
        ports: dict[int, DeniedPort] = {}
        if "deny" in top:
            deny = self.mapping(top["deny"], "deny", ("networks", "ports"))
            for node in self.sequence(deny.get("networks"), "deny.networks"):
                networks.append(DeniedNetwork(self.network(node), node.start_mark.line + 1))
            for node in self.sequence(deny.get("ports"), "deny.ports"):
                port, protocols = self.port_entry(node)
                earlier = ports.get(port)
                if earlier is not None:
                    protocols = tuple(sorted(set(protocols) | set(earlier.protocols)))
                ports[port] = DeniedPort(port, protocols, earlier.line if earlier else node.start_mark.line + 1)
        patterns = [self.pattern(node, i) for i, node in enumerate(self.sequence(top.get("patterns"), "patterns"))]
        return Rules(self.name, tuple(networks), tuple(ports.values()), tuple(patterns))

    # --- shapes ---

    @staticmethod
    def _is_null(node: yaml.Node) -> bool:
        return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"

    def mapping(self, node: yaml.Node, what: str, keys: tuple[str, ...]) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{what} must be a mapping with {_either(keys)}")
        out: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key not in keys:
                raise self.error(key_node, f"unknown key {key!r} in {what} (expected {_either(keys)})")
            if key in out:
                raise self.error(key_node, f"{key!r} given twice in {what}")
            out[key] = value_node
        return out

    def sequence(self, node: Optional[yaml.Node], what: str) -> list[yaml.Node]:
        if node is None or self._is_null(node):
            return []
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, f"{what} must be a list")
        return list(node.value)

    def scalar(self, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            return node  # the caller reports it as the wrong type
        return self._scalars.construct_object(node)

    # --- entries ---

    def network(self, node: yaml.Node) -> Network:
        value = self.scalar(node)
        try:
            if not isinstance(value, str):
                raise ValueError("not a string")
            return ipaddress.ip_network(value)
        except ValueError as exc:
            shown = value if isinstance(value, (str, int, float)) else "this entry"
            raise self.error(node, f"{shown!r} is not a CIDR ({exc})") from None

    def port(self, node: yaml.Node, value: Any) -> int:
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            shown = value if isinstance(value, (str, int, float)) else "this entry"
            raise self.error(node, f"{shown!r} is not a port (a whole number from 1 to 65535)")
        return value

    def protocol(self, node: yaml.Node) -> str:
        value = self.scalar(node)
        if value not in _PROTOCOL_NUMBERS:
            raise self.error(node, f"protocol {value!r} is not tcp or udp")
        return str(value)

    def port_entry(self, node: yaml.Node) -> tuple[int, tuple[str, ...]]:
        """23 (TCP and UDP), "23/tcp", or {port: 23, protocol: tcp}."""
        if isinstance(node, yaml.MappingNode):
            fields = self.mapping(node, "a port entry", ("port", "protocol"))
            if "port" not in fields:
                raise self.error(node, "a port entry needs `port`")
            port = self.port(fields["port"], self.scalar(fields["port"]))
            if "protocol" in fields:
                return port, (self.protocol(fields["protocol"]),)
            return port, ("tcp", "udp")
        value = self.scalar(node)
        if isinstance(value, str) and "/" in value:
            number, _, protocol = value.partition("/")
            if protocol not in _PROTOCOL_NUMBERS:
                raise self.error(node, f"protocol {protocol!r} in {value!r} is not tcp or udp")
            return self.port(node, number.strip()), (protocol,)
        return self.port(node, value), ("tcp", "udp")

    def pattern(self, node: yaml.Node, index: int) -> Pattern:
        if index >= MAX_PATTERNS:
            raise self.error(node, f"more than {MAX_PATTERNS} patterns")
        fields = self.mapping(node, "a pattern", ("name", "text", "hex", "protocol", "port"))
        line = node.start_mark.line + 1
        if ("text" in fields) == ("hex" in fields):
            raise self.error(node, "a pattern needs exactly one of `text` (UTF-8) or `hex` (bytes)")
        if "text" in fields:
            source = fields["text"]
            text = self.scalar(source)
            if not isinstance(text, str):
                raise self.error(source, f"`text` must be a string, not {text!r}")
            data = text.encode("utf-8")
        else:
            source = fields["hex"]
            digits = self.scalar(source)
            try:
                data = bytes.fromhex(str(digits))
            except ValueError:
                raise self.error(source, f"{digits!r} is not hex bytes (like '16 03 01')") from None
        if not 1 <= len(data) <= PATTERN_BYTES:
            raise self.error(source, f"a pattern is 1 to {PATTERN_BYTES} bytes; {data!r} is {len(data)}")
        name = str(self.scalar(fields["name"])) if "name" in fields else None
        protocol = self.protocol(fields["protocol"]) if "protocol" in fields else None
        port = self.port(fields["port"], self.scalar(fields["port"])) if "port" in fields else None
        return Pattern(name, data, protocol, port, line)


def _either(keys: tuple[str, ...]) -> str:
    return ", ".join(f"`{k}`" for k in keys[:-1]) + f" or `{keys[-1]}`" if len(keys) > 1 else f"`{keys[0]}`"


# --- events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """What counts as a scan or a flood, and how often one deny or pattern rule may report the
    same pair of addresses. Frozen in .rodata at load."""

    scan_ports: int = 32  # more distinct ports than this from one source within `window`
    window: float = 10.0  # seconds
    syn_rate: float = 100.0  # half-open SYNs per second and destination, over `window`
    event_interval: float = 10.0  # seconds between deny/pattern events of one (source, destination, rule)

    @property
    def syn_limit(self) -> int:
        return max(1, int(self.syn_rate * self.window))


@dataclass(frozen=True)
class Event:
    time: float  # wall clock
    kind: str  # port-scan, syn-flood, denied-address, denied-port, pattern
    direction: str  # ingress or egress
    proto: str
    src: str
    sport: int
    dst: str
    dport: int
    count: int
    rule: Optional[int]
    detail: str

    def endpoints(self) -> str:
        def end(addr: str, port: int) -> str:
            host = f"[{addr}]" if ":" in addr else addr
            return f"{host}:{port}" if port else host

        return f"{self.proto} {end(self.src, self.sport)} → {end(self.dst, self.dport)}"

    def as_dict(self) -> dict[str, Any]:
        return {"time": round(self.time, 3), "kind": self.kind, "direction": self.direction, "proto": self.proto,
                "src": self.src, "sport": self.sport, "dst": self.dst, "dport": self.dport,
                "count": self.count, "detail": self.detail}


@dataclass(frozen=True)
class Counts:
    """The kernel's counters: packets seen, events sent by kind, deny/pattern events held back by
    the rate limit, and events lost to a full ring."""

    packets: int = 0
    events: dict[str, int] = field(default_factory=dict)
    suppressed: int = 0
    lost: int = 0


def _address(raw: bytes) -> str:
    address = ipaddress.IPv6Address(raw)
    return str(address.ipv4_mapped or address)


def port_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise OptionValueError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 1023:  # the kernel's bitmap has 1024 bits: one more must still fit
        raise OptionValueError(f"{text!r} must be from 1 to 1023")
    return value


_DEFAULTS = Thresholds()


class Monitor(Tool):
    """`with Monitor("eth1", rules=load_rules(path)) as mon: mon.poll()`; detaches on exit."""

    NAME = "tcmon"
    HELP = "watch traffic for scans, SYN floods, denied addresses and payload patterns (tc)"
    NEEDS = (("tcx", "clsact"), ("ringbuf",))
    CAPABILITIES = NET
    KIND = Kind.STREAMING
    OPTIONS = (
        IFACE,
        TC_MODE,
        Option("rules", "YAML rules: denied networks and ports, payload patterns; SIGHUP re-reads it (default: the "
               "tcmon.yaml shipped with bpfscope)", str, default=str(DEFAULT_RULES), metavar="FILE"),
        Option("scan_ports", f"a source trying more than N distinct ports within the window is a port scan "
               f"(default: {_DEFAULTS.scan_ports})", port_count, default=_DEFAULTS.scan_ports, metavar="N"),
        Option("window", f"seconds over which ports and SYNs are counted (default: {_DEFAULTS.window:g})",
               positive_float, default=_DEFAULTS.window, metavar="S"),
        Option("syn_rate", f"SYNs per second to one destination without a completed handshake, over the window, "
               f"that make a SYN flood (default: {_DEFAULTS.syn_rate:g})", positive_float,
               default=_DEFAULTS.syn_rate, metavar="PER_S"),
        Option("event_interval", f"at most one deny or pattern event per source, destination and rule every S "
               f"seconds; the rest are counted as suppressed (default: {_DEFAULTS.event_interval:g})",
               positive_float, default=_DEFAULTS.event_interval, metavar="S"),
        INTERVAL.but(default=0.5, help="seconds between refreshes of the live view (default: 0.5)"),
        DURATION,
        JSON.but(help="one JSON object per event, and a final summary"),
        RING_BYTES.but(default=DEFAULT_RING_BYTES),
    )
    AGENT_KEY = "tcmon"
    # watch_* update the per-source state with Linux 5.12's atomics, watch_*_locked under spin locks
    # (older kernels): same events, same counters.
    VARIANT = Variant(
        Feature.ATOMICS, ("watch_ingress", "watch_egress"), ("watch_ingress_locked", "watch_egress_locked"),
    )

    def __init__(
        self, iface: str, *, rules: Rules, thresholds: Thresholds = Thresholds(), mode: TcMode = TcMode.AUTO,
        ring_bytes: int = DEFAULT_RING_BYTES, pin_dir: Optional[str] = None,
    ) -> None:
        super().__init__(pin_dir=pin_dir)  # counters pinned there carry on from an earlier run
        self.iface = iface
        self.rules = rules
        self.thresholds = thresholds
        self.mode = mode  # as asked; once attached, as used (TCX or CLSACT)
        self.ring_bytes = ring_bytes
        self._kinds: dict[int, str] = {}
        self._clock_offset_ns = 0
        self._events: Optional[RingBuffer] = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any], *, pin_dir: Optional[str] = None) -> Monitor:
        # The rules file first: a mistake in it is what is said, before the interface is looked up.
        rules = load_rules(options.get("rules") or DEFAULT_RULES)
        return super().from_options({**options, "rules": rules}, pin_dir=pin_dir)

    @classmethod
    def _from_options(cls, values: Mapping[str, Any], pin_dir: Optional[str]) -> Monitor:
        thresholds = Thresholds(scan_ports=values["scan_ports"], window=values["window"], syn_rate=values["syn_rate"],
                                event_interval=values["event_interval"])
        return cls(values["iface"], rules=values["rules"], thresholds=thresholds, mode=TcMode(values["mode"]),
                   ring_bytes=values["ring_bytes"], pin_dir=pin_dir)

    def _open(self) -> None:
        """Loads, writes the rules, and attaches to ingress and egress."""
        netdev.ifindex(self.iface)  # an unknown name fails here, before anything is loaded
        if self._obj is None:  # else load() loaded it
            self._load()
        self.mode = self.attach_tc(self.iface, {direction: self.program(direction) for direction in TcDirection},
                                   self.mode)

    def load(self) -> Monitor:
        """Loads the programs with the rules written, attached nowhere (for test_run); `with` then
        uses it as it is and closes it."""
        try:
            self._load()
        except BaseException:
            self.close()
            raise
        return self

    def __enter__(self) -> Monitor:
        return self if self._obj is not None else self.open()

    def _load(self) -> None:
        t = self.thresholds
        spec = ObjectSpec.open(tool_object("tcmon"))
        choose(spec, self.VARIANT)
        spec.rodata["cfg_scan_ports"] = t.scan_ports
        spec.rodata["cfg_window_ns"] = int(t.window * NSEC_PER_SEC)
        spec.rodata["cfg_syn_limit"] = t.syn_limit
        spec.rodata["cfg_event_interval_ns"] = int(t.event_interval * NSEC_PER_SEC)
        spec.maps["events"].max_entries = self.ring_bytes
        spec.pin_maps(self.pin_dir, ["counts", "events_lost"])
        self._obj = obj = spec.load()
        kinds = obj.exported_type("kind").python_type  # enum event_kind: EVENT_PORT_SCAN = 0, ...
        self._kinds = {int(k): k.name[len("EVENT_"):].lower().replace("_", "-") for k in kinds
                       if k.name != "EVENT_KIND_COUNT"}
        self._write_rules(self.rules, first=True)
        self._events = self.ring(obj.ring_buffer("events"))
        self._clock_offset_ns = time.time_ns() - time.clock_gettime_ns(time.CLOCK_MONOTONIC)

    def program(self, direction: TcDirection) -> Program:
        """The loaded program of one direction, in the form this kernel took (see VARIANT)."""
        name = "watch_ingress" if direction is TcDirection.INGRESS else "watch_egress"
        programs = self.obj.programs
        return programs[name] if name in programs else programs[f"{name}_locked"]

    # --- rules ---

    def apply(self, rules: Rules) -> None:
        """Replaces the rules in the running programs' maps; nothing is detached or reloaded.
        New entries go in before stale ones go out, so a rule in both sets never lapses."""
        self._write_rules(rules, first=False)
        self.rules = rules

    def _write_rules(self, rules: Rules, *, first: bool) -> None:
        maps = self.obj.maps
        numbers = {id(rule): i for i, rule in enumerate(rules.all)}

        networks = maps["denied_cidrs"]
        stale = set()
        if not first:
            keys, _ = networks.lookup_batch()
            size = keys.dtype.itemsize
            raw = keys.tobytes()
            stale = {raw[i:i + size] for i in range(0, len(raw), size)}
        for rule in rules.networks:
            key = cidr_key(rule.network)
            networks[key] = numbers[id(rule)]
            stale.discard(networks.key.to_bytes(key))
        for raw in stale:
            networks.delete(raw)

        ports = maps["denied_ports"]
        stale_ports = {int(k) for k in ports.lookup_batch()[0]} if not first else set()
        for port_rule in rules.ports:
            bits = sum(_PORT_PROTOCOL_BITS[p] for p in port_rule.protocols)
            ports[port_rule.port] = {"rule": numbers[id(port_rule)], "protocols": bits}
            stale_ports.discard(port_rule.port)
        for port in stale_ports:
            ports.delete(port)

        table = maps["patterns"]
        for i in range(MAX_PATTERNS):
            if i < len(rules.patterns):
                table[i] = self._pattern_value(rules.patterns[i], numbers[id(rules.patterns[i])])
            elif first:
                break  # a fresh array is all zeroes: the list already ends here
            else:
                table[i] = {"value": (0, 0), "mask": (0, 0), "port": 0, "proto": 0, "len": 0, "rule": 0}
        if not first:
            # Rate-limit state is keyed by rule number, and numbers now name other rules.
            maps["limits"].clear()

    @staticmethod
    def _pattern_value(pattern: Pattern, number: int) -> dict[str, Any]:
        padded = pattern.data.ljust(PATTERN_BYTES, b"\0")
        mask = (b"\xff" * len(pattern.data)).ljust(PATTERN_BYTES, b"\0")
        # The program compares the payload's first 16 bytes as two native-endian u64 words.
        words = np.frombuffer(padded, dtype=np.uint64)
        masks = np.frombuffer(mask, dtype=np.uint64)
        return {"value": tuple(int(w) for w in words), "mask": tuple(int(m) for m in masks),
                "port": pattern.port or 0, "proto": _PROTOCOL_NUMBERS[pattern.protocol] if pattern.protocol else 0,
                "len": len(pattern.data), "rule": number}

    # --- reading ---

    def poll(self, timeout_ms: int = 100) -> list[Event]:
        """The events that arrived, waiting up to `timeout_ms` for the first."""
        assert self._events is not None, "open() first"
        return [self._event(record) for record in self._events.poll(timeout_ms)]

    def _event(self, record: Any) -> Event:
        kind = self._kinds.get(int(record["kind"]), str(int(record["kind"])))
        proto_number = int(record["proto"])
        src, dst = _address(bytes(record["saddr"])), _address(bytes(record["daddr"]))
        count = int(record["count"])
        rule_number: Optional[int] = None
        t = self.thresholds
        if kind == "port-scan":
            detail = f"{src} tried more than {t.scan_ports} ports within {t.window:g} s"
        elif kind == "syn-flood":
            detail = f"{count:,} half-open SYNs to {dst} within {t.window:g} s (limit {t.syn_limit:,})"
        else:
            rule_number = int(record["rule"])
            rules = self.rules.all
            rule = rules[rule_number].describe() + f" (line {rules[rule_number].line})" \
                if rule_number < len(rules) else f"rule {rule_number}"
            detail = rule + (f"; {count:,} more since the last event" if count else "")
        return Event(
            time=(int(record["time_ns"]) + self._clock_offset_ns) / 1e9, kind=kind,
            direction="ingress" if int(record["direction"]) == 0 else "egress",
            proto=_PROTOCOL_NAMES.get(proto_number, str(proto_number)), src=src, sport=int(record["sport"]),
            dst=dst, dport=int(record["dport"]), count=count, rule=rule_number, detail=detail,
        )

    def counts(self) -> Counts:
        _, totals = self.obj.maps["counts"].lookup_batch_sum()  # type: ignore[attr-defined]
        row = totals[0]
        events = {name: int(row["events"][number]) for number, name in self._kinds.items()}
        return Counts(int(row["packets"]), events, int(row["suppressed"]), self.lost)

    def metrics(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        counts = self.counts()
        packets = CounterMetricFamily("bpfscope_tcmon_packets", "Packets tcmon looked at, both directions (tc)",
                                      labels=["interface"])
        packets.add_metric([self.iface], counts.packets)
        events = CounterMetricFamily("bpfscope_tcmon_events", "What tcmon detected: port scans, SYN floods, denied "
                                     "addresses and ports, payload patterns", labels=["interface", "kind"])
        for kind, n in counts.events.items():
            events.add_metric([self.iface, kind], n)
        suppressed = CounterMetricFamily("bpfscope_tcmon_suppressed_events", "Deny and pattern hits held back by "
                                         "the limit of one event per source, destination and rule and interval",
                                         labels=["interface"])
        suppressed.add_metric([self.iface], counts.suppressed)
        yield from (packets, events, suppressed)


TOOL = Monitor
