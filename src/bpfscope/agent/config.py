"""The agent's configuration: YAML, checked field by field so a mistake is reported in one line
that names the field (`tools.flows.top: 'many' is not a whole number`).

A tool on the Tool base (bpfscope.tools) has its section `tools.<Tool.AGENT_KEY>`, read from the same
option declarations as its CLI flags (Tool.OPTIONS); a tool that takes --iface takes `interfaces:` there,
and runs once on each (Tool.per_interface), unless its config names one interface as a value of its
own; a tool that runs several times (Tool.AGENT_INSTANCES) has a list there, one mapping per instance.
Without a file the agent counts packets on the default route's interface, file opens and execs."""

from __future__ import annotations

import errno
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar, Union

import yaml

from ..errors import BpfscopeError
from ..link import DEFAULT_TC_LEASES, tc_lease_dir
from ..pin import BPFFS, PIN_ROOT
from ..tools import _registry as registry
from ..tools._base import OptionValueError, Tool

__all__ = [
    "DEFAULT_LISTEN", "ConfigError", "Fields", "AgentConfig", "Instance", "ToolConfig",
    "CustomConfig", "OtlpConfig", "load_config", "parse_config", "default_interface",
]

DEFAULT_LISTEN = "127.0.0.1:24435"
DEFAULT_PIN_DIR = os.path.join(PIN_ROOT, "agent")

T = TypeVar("T")


class ConfigError(BpfscopeError):
    """A config that cannot be used; the message names the file and the field."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(errno.EINVAL, f"{where}: {message}" if where else message)
        self.where = where


class Fields:
    """One YAML mapping being read: typed getters that name the field on error, and a check that
    nothing unknown was left over. `path` is where the mapping sits (`tools.flows`)."""

    def __init__(self, value: Any, path: str, source: str = "") -> None:
        self.path = path
        self.source = source
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self.error("", f"must be a mapping, not {_shown(value)}")
        for key in value:
            if not isinstance(key, str):  # YAML makes 8080: or on: a number or a boolean
                raise self.error(str(key), f"a field name must be text, not {_shown(key)}: quote it")
        self._values: dict[str, Any] = value
        self._read: set[str] = set()
        self._known: set[str] = set()  # every field asked about, present or not

    def where(self, name: str) -> str:
        inside = ".".join(p for p in (self.path, name) if p)
        return f"{self.source}: {inside}" if self.source and inside else (self.source or inside)

    def error(self, name: str, message: str) -> ConfigError:
        return ConfigError(self.where(name), message)

    def has(self, name: str) -> bool:
        self._known.add(name)
        return name in self._values

    def raw(self, name: str, default: Any = None) -> Any:
        self._known.add(name)
        self._read.add(name)
        return self._values.get(name, default)

    def keys(self) -> list[str]:
        """The fields present, in the document's order."""
        return list(self._values)

    def child(self, name: str) -> Fields:
        return Fields(self.raw(name), ".".join(p for p in (self.path, name) if p), self.source)

    def string(self, name: str, default: Optional[str] = None) -> Optional[str]:
        value = self.raw(name, default)
        if value is not None and not isinstance(value, str):
            raise self.error(name, f"must be a string, not {_shown(value)}")
        return value

    def required_string(self, name: str) -> str:
        value = self.string(name)
        if not value:
            raise self.error(name, "is required")
        return value

    def integer(self, name: str, default: Optional[int], low: int, high: int) -> Optional[int]:
        value = self.raw(name, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.error(name, f"must be an integer from {low:,} to {high:,}, not {_shown(value)}")
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        value = self.raw(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise self.error(name, f"must be a number from {low:g} to {high:g}, not {_shown(value)}")
        return float(value)

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name, default)
        if not isinstance(value, bool):
            raise self.error(name, f"must be true or false, not {_shown(value)}")
        return value

    def strings(self, name: str, default: Optional[list[str]] = None) -> list[str]:
        value = self.raw(name, default)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(name, f"must be a list of names, not {_shown(value)}")
        return list(value)

    def items(self, name: str, parse: Callable[[Fields], T]) -> list[T]:
        """A list of mappings, each read by `parse`."""
        value = self.raw(name, [])
        if isinstance(value, dict):
            value = [value]
        if not isinstance(value, list):
            raise self.error(name, f"must be a list, not {_shown(value)}")
        base = ".".join(p for p in (self.path, name) if p)
        return [parse(Fields(item, f"{base}[{i}]", self.source)) for i, item in enumerate(value)]

    def done(self) -> None:
        """Every key was read: anything else is a typo or belongs elsewhere."""
        unknown = sorted(set(self._values) - self._read)
        if unknown:
            known = ", ".join(sorted(self._known))
            raise self.error(unknown[0], f"unknown field (known here: {known})")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def default_interface() -> str:
    """The interface of the default route, as `make run` picks it; lo if there is none."""
    try:
        with open("/proc/net/route") as routes:
            for line in routes.readlines()[1:]:
                parts = line.split()
                if len(parts) > 1 and parts[1] == "00000000":
                    return parts[0]
    except OSError:
        pass
    return "lo"


@dataclass(frozen=True)
class Instance:
    """One run of a tool in the agent: the values of its declared options (defaults filled in), and
    what tells it from the tool's other runs (its interface, its function; "" for a tool that runs
    once), which names its pin directory."""

    options: tuple[tuple[str, Any], ...]
    name: str = ""

    @property
    def values(self) -> dict[str, Any]:
        return dict(self.options)


@dataclass(frozen=True)
class ToolConfig:
    """A tool on the Tool base, as its section `tools.<key>` asks: one instance, or one per interface
    (a tool that takes --iface), or one per item of the section's list (Tool.AGENT_INSTANCES)."""

    name: str  # the tool's (registry) name
    key: str  # its section under `tools:` (Tool.AGENT_KEY)
    instances: tuple[Instance, ...]

    @property
    def values(self) -> dict[str, Any]:
        """The first instance's values: those of a tool that runs once."""
        return self.instances[0].values

    @property
    def on(self) -> tuple[str, ...]:
        """The interfaces it runs on: one instance each, or the one its section names (guard's)."""
        return tuple(iface for i in self.instances if isinstance(iface := i.values.get("iface"), str))


@dataclass(frozen=True)
class CustomConfig:
    """A program of the user's: its `.bpf.c` or `.bpf.o`, and the YAML naming its metrics."""

    object: Path
    metrics: Path


@dataclass(frozen=True)
class OtlpConfig:
    endpoint: str
    interval: float = 15.0
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class AgentConfig:
    listen: str = DEFAULT_LISTEN
    pin_dir: str = DEFAULT_PIN_DIR
    # The clsact filters' leases (bpfscope.link): by default where $BPFSCOPE_TC_LEASES says, as for the CLI.
    tc_leases: str = field(default_factory=tc_lease_dir)
    containers: bool = True  # cgroup → container id and pod uid labels
    max_containers: int = 500  # distinct containers labelled before the rest are container="other"
    ring_bytes: int = 1 << 22
    tools: tuple[ToolConfig, ...] = ()  # the tools on the Tool base, in the file's order
    custom: tuple[CustomConfig, ...] = ()
    otlp: Optional[OtlpConfig] = None
    source: str = ""  # the file it came from, "" for the default

    @classmethod
    def default(cls) -> AgentConfig:
        tools = tuple(_tool_config(registry.tool_class(name), Fields({}, name))
                      for name in ("packets", "opensnoop", "execsnoop"))
        return cls(tools=tools)

    def tool(self, name: str) -> Optional[ToolConfig]:
        """The config of tool `name`, if it runs."""
        return next((t for t in self.tools if t.name == name), None)



def load_config(path: Union[str, os.PathLike[str], None]) -> AgentConfig:
    """Reads and checks a config file; None gives the default config."""
    if path is None:
        return AgentConfig.default()
    name = os.fspath(path)
    try:
        with open(name) as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(name, f"cannot read: {exc.strerror}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        raise ConfigError(where, f"not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    return parse_config(document, source=name, base=Path(name).resolve().parent)


def parse_config(document: Any, *, source: str = "", base: Optional[Path] = None) -> AgentConfig:
    """Checks a parsed YAML document; relative paths in it are taken from `base`."""
    base = base or Path.cwd()
    top = Fields(document, "", source)
    listen = top.string("listen", DEFAULT_LISTEN) or DEFAULT_LISTEN
    _check_listen(listen, top)
    pin_dir = top.string("pin_dir", DEFAULT_PIN_DIR) or DEFAULT_PIN_DIR
    if (os.path.normpath(pin_dir) != pin_dir or not pin_dir.startswith(f"{BPFFS}/")
            or pin_dir in (BPFFS, PIN_ROOT) or pin_dir.startswith(f"{BPFFS}/tc")):
        # The agent removes what it pinned there: a directory of its own, never bpffs or bpfscope's root.
        raise top.error("pin_dir", f"must be a directory of the agent's own under {BPFFS} (as {DEFAULT_PIN_DIR}), "
                        f"not {pin_dir!r}")
    tc_leases = top.string("tc_leases", tc_lease_dir()) or tc_lease_dir()
    if not os.path.isabs(tc_leases) or os.path.normpath(tc_leases) != tc_leases:
        raise top.error("tc_leases", f"must be an absolute directory (as {DEFAULT_TC_LEASES}), not {tc_leases!r}")
    containers = top.boolean("containers", True)
    max_containers = top.integer("max_containers", 500, 1, 100_000)
    ring_bytes = top.integer("ring_bytes", 1 << 22, 1 << 12, 1 << 30)
    assert max_containers is not None and ring_bytes is not None
    if ring_bytes & (ring_bytes - 1):
        raise top.error("ring_bytes", f"must be a power of two, not {ring_bytes:,}")

    tools = top.child("tools")
    by_key = {tool.AGENT_KEY: tool for tool in registry.all_tools() if tool.AGENT_KEY}
    for key in by_key:
        tools.has(key)  # named among the known fields when one is not
    # `opens: true` is `opens: {}`; `opens: false` leaves it out.
    enabled = [key for key in tools.keys() if key in by_key and tools.raw(key) is not False]
    generic = tuple(config for config in (_section(by_key[key], tools) for key in enabled) if config.instances)
    tools.done()

    custom = tuple(top.items("custom", lambda f: _custom(f, base)))
    _no_repeats(top, "custom", [c.object.name.split(".")[0] for c in custom], "program name")
    otlp = _otlp(top.child("otlp")) if top.has("otlp") else None
    top.done()
    _one_xdp_program_each(tools, generic)
    if not any((generic, custom)):
        raise ConfigError(top.where("tools"), "no tool is enabled: nothing to export")
    return AgentConfig(
        listen=listen, pin_dir=pin_dir, tc_leases=tc_leases, containers=containers, max_containers=max_containers,
        ring_bytes=ring_bytes,
        tools=generic,
        custom=custom, otlp=otlp, source=source,
    )


def _no_repeats(f: Fields, name: str, keys: list[Any], what: str) -> None:
    """Two entries of one list that would export the same series."""
    for i, key in enumerate(keys):
        if key in keys[:i]:
            raise f.error(f"{name}[{i}]", f"the same {what} as {name}[{keys.index(key)}]: their series would clash")


def _check_listen(listen: str, top: Fields) -> None:
    host, sep, port = listen.rpartition(":")
    try:
        ipaddress.ip_address(host.strip("[]"))
        ok = bool(sep) and 0 <= int(port) <= 65535
    except ValueError:
        ok = False
    if not ok:
        raise top.error("listen", f"must be ADDRESS:PORT (as {DEFAULT_LISTEN}), not {listen!r}")


def _section(tool: type[Tool], tools: Fields) -> ToolConfig:
    """The section `tools.<key>` of a tool on the Tool base: a list of instances, or one mapping
    (`opens: true` is `opens: {}`)."""
    key = tool.AGENT_KEY or tool.NAME
    if not tool.AGENT_INSTANCES:
        return _tool_config(tool, Fields({}, f"tools.{key}", tools.source) if tools.raw(key) is True
                            else tools.child(key))
    instances = tools.items(key, lambda f: _instance(tool, f))
    _no_repeats(tools, key, [i.name for i in instances], " and ".join(tool.AGENT_INSTANCES))
    return ToolConfig(tool.NAME, key, tuple(instances))


def _tool_config(tool: type[Tool], section: Fields) -> ToolConfig:
    """The mapping of a tool that runs once, or once per interface."""
    values = _options(tool, section)
    if tool.per_interface():
        instances = tuple(Instance(tuple({**values, "iface": iface}.items()), iface) for iface in _interfaces(section))
    else:
        instances = (Instance(tuple(values.items())),)
    section.done()
    return ToolConfig(tool.NAME, tool.AGENT_KEY or tool.NAME, instances)


def _instance(tool: type[Tool], section: Fields) -> Instance:
    """One item of the list of a tool that runs several times, named by its AGENT_INSTANCES values."""
    values = _options(tool, section)
    section.done()
    return Instance(tuple(values.items()), " ".join(str(values[name]) for name in tool.AGENT_INSTANCES))


def _options(tool: type[Tool], section: Fields) -> dict[str, Any]:
    """A mapping read through the tool's option declarations."""
    values: dict[str, Any] = {}
    for option in tool.OPTIONS:
        if not option.agent or not section.has(option.key):
            if option.agent and option.required:
                raise section.error(option.key, f"is required: {option.help}")
            values[option.name] = option.default
            continue
        try:
            values[option.name] = option.from_config(section.raw(option.key))
        except OptionValueError as exc:
            raise section.error(option.key, str(exc)) from None
    return values


def _one_xdp_program_each(tools: Fields, configs: tuple[ToolConfig, ...]) -> None:
    """An interface holds one XDP program: two tools that attach one (doctor's row `xdp_link`) cannot
    both run on it."""
    holders: dict[str, str] = {}
    for config in configs:
        if not any("xdp_link" in group for group in registry.tool_class(config.name).NEEDS):
            continue
        for iface in config.on:
            if iface in holders:
                raise ConfigError(tools.where(config.key), f"{iface} already runs tools.{holders[iface]}: an "
                                  "interface holds one XDP program, so run the two on different interfaces")
            holders[iface] = config.key


def _interfaces(section: Fields) -> tuple[str, ...]:
    ifaces = tuple(section.strings("interfaces", [default_interface()]))
    if not ifaces:
        raise section.error("interfaces", "must name at least one interface")
    if len(set(ifaces)) != len(ifaces):
        raise section.error("interfaces", "names an interface twice")
    return ifaces


def _custom(f: Fields, base: Path) -> CustomConfig:
    """A program and its metrics share a basename (biolatency.bpf.c and biolatency.yaml), as in
    ebpf_exporter; `metrics:` names another file."""
    obj = base / f.required_string("object")
    if not obj.name.endswith((".bpf.c", ".bpf.o")):
        raise f.error("object", f"must end with .bpf.c or .bpf.o: {str(obj)!r}")
    stem = obj.name[: -len(".bpf.c")]
    metrics = base / (f.string("metrics") or str(obj.with_name(stem + ".yaml")))
    for name, path in (("object", obj), ("metrics", metrics)):
        if not path.is_file():
            raise f.error(name, f"no such file: {str(path)!r}")
    if not metrics.name.endswith((".yaml", ".yml")):
        raise f.error("metrics", f"must end with .yaml or .yml: {str(metrics)!r}")
    f.done()
    return CustomConfig(obj, metrics)


def _otlp(f: Fields) -> OtlpConfig:
    endpoint = f.required_string("endpoint")
    if not endpoint.startswith(("http://", "https://")):
        raise f.error("endpoint", f"must be an http:// or https:// URL, not {endpoint!r}")
    headers = f.raw("headers", {}) or {}
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise f.error("headers", "must map header names to strings")
    config = OtlpConfig(endpoint, f.number("interval", 15.0, 1.0, 3600.0), tuple(sorted(headers.items())))
    f.done()
    return config
