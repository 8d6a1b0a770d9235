"""Custom programs in the agent, as ebpf_exporter runs them: a user's `.bpf.c` (compiled here, with
bpfscope's headers) or `.bpf.o`, and a metrics YAML beside it (same basename) saying which maps
become Prometheus metrics and how key fields become labels. Every type comes from the object's BTF:
the YAML names fields, never offsets or sizes, and it is checked against that BTF before anything
reaches the kernel, each mistake one line naming the field.

The metrics YAML (examples/agent/ has three, each beside its program)::

    counters:                        # gauges: has the same shape
      - name: bpfscope_read_bytes_total   # the full Prometheus name; a counter's ends with _total
        help: Bytes returned by read(), by command
        map: read_bytes              # a hash or array map, per-CPU or not (per-CPU values are summed)
        value: bytes                 # a number field of the value struct; left out when the value is a number
        multiplier: 1                # scales the values (1e-9 turns nanoseconds into seconds)
        labels:
          - name: comm               # defaults to the field's name
            field: comm              # a field of the key struct; left out when the key is one value
            decoder: string          # int | string | comm | ipv4 | ipv6 | cgroup | ksym | enum
    histograms:
      - name: bpfscope_read_size_bytes
        help: Sizes read() returned
        map: read_sizes
        bucket_field: slot           # the key field holding the bucket index
        buckets: log2                # log2 | linear (with bucket_width: N) | fixed (with bucket_bounds: [...])
        max_bucket: 30               # optional: the index the program clamps larger values into
        value: count                 # the bucket's count, when the value is a struct
        sum_field: bytes             # optional: the total of the values counted, kept by the program
        multiplier: 1                # scales bucket bounds and the sum
        labels: [...]
    attach:
      xdp: [eth0]                    # interfaces for SEC("xdp") programs
      xdp_mode: auto                 # auto | native | generic
      tc_ingress: [eth0]             # interfaces for SEC("tc") programs, by direction
      tc_egress: []
      perf_frequency: 99             # SEC("perf_event") programs run this often a second on each CPU

Rows whose labels decode alike are added together, so key fields left out of the labels are summed
over. A label's decoder defaults from its field's type (char array: string, enum: enum, integer:
int); the others are asked for by name:

- int: an integer as a decimal number.
- string: a char (or __u8) array, up to its first NUL; invalid UTF-8 is backslash-escaped.
- comm: the same, for a char[16] (TASK_COMM_LEN) from bpf_get_current_comm().
- ipv4: a __be32 or __u8[4] in network order, as 192.0.2.1.
- ipv6: a __u8[16] (or struct in6_addr), as 2001:db8::1; an IPv4-mapped address (::ffff:192.0.2.1)
  is shown as 192.0.2.1, so one field can hold both families.
- cgroup: a __u64 cgroup id (bpf_get_current_cgroup_id()) as its cgroup v2 path, "" when the cgroup is
  gone or not yet seen.
- ksym: a kernel address as the name of the nearest symbol at or below it in /proc/kallsyms (read once,
  at open); 0x... when below every symbol.
- enum: an enum field as its enumerator's name from BTF; a value the enum does not name as a number.

Buckets, by the index the program writes into `bucket_field` (values are integers, as in BPF; `le` is
the largest value a bucket holds, times `multiplier`):

- log2: index i holds values from 2^i to 2^(i+1) - 1 (index 0 holds 0 and 1), the floor of log2 as
  BCC and bpfscope's tools compute it; le = 2^(i+1) - 1.
- linear: index i holds values from i*w to (i+1)*w - 1 for bucket_width w; le = (i+1)*w - 1.
- fixed: index i holds values up to bucket_bounds[i] (and above the bound before it); le = that bound.
  An index past the last bound holds the rest.

With `max_bucket: N` (log2, linear) indices 0 to N-1 are always exported and index N, where the program
clamps what is larger, counts only toward +Inf; without it buckets go up to the highest index seen.
Buckets are cumulative and end with +Inf; at most 64 (log2) or 4096 have a bound. `_sum` is what the
program adds up in `sum_field`, so it is exact: it is never estimated from bucket bounds. Without
`sum_field` a histogram has no `_sum`, and prometheus_client then leaves out `_count` too: the +Inf
bucket is the count.

Programs attach as their section says: SEC("tracepoint/CATEGORY/NAME") and SEC("tp/CATEGORY/NAME")
to that tracepoint, SEC("uprobe/BINARY:FUNCTION[+OFFSET]") and SEC("uretprobe/...") to that function
(BINARY a path or a library name such as libc), SEC("perf_event") to a cpu-clock event on every CPU,
SEC("xdp") and SEC("tc") to the interfaces `attach:` lists. Any other section is refused, naming the
program; a program whose section starts with "?" (autoload off) is left out.

Maps the metrics read are pinned under `pin_dir/<basename>/<map>`: a restart takes them over, so
counts carry on. Nothing else is pinned, and nothing stays attached when opening fails."""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import ipaddress
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import yaml
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from .. import build, netdev
from ..btf import Btf, Kind, TypeCodec
from ..errors import BpfscopeError
from ..link import Link
from ..maps import Map, MapType, PerCpuHashMap
from ..mounts import tracefs_path
from ..object import MapSpec, Object, ObjectSpec
from ..program import Program, TcDirection, XdpMode, resolve_binary
from .config import ConfigError, CustomConfig, Fields
from .containers import ContainerResolver
from .source import Source
from .sources import pin_subdir

__all__ = [
    "DECODERS", "AttachSpec", "Buckets", "CustomProgram", "LabelSpec", "MetricSpec", "MetricsSpec", "build_cached",
    "load_metrics", "parse_metrics",
]

DECODERS = ("int", "string", "comm", "ipv4", "ipv6", "cgroup", "ksym", "enum")

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_TASK_COMM_LEN = 16
_READABLE_MAPS = {MapType.HASH, MapType.LRU_HASH, MapType.ARRAY, MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH,
                  MapType.PERCPU_ARRAY}
_CACHE_LIMIT = 100_000  # decoded label values remembered per label; past it the cache starts afresh
_MAX_BUCKETS = 4096  # linear buckets with a bound, when max_bucket does not say
_DEFAULT_CACHE = "/var/cache/bpfscope/custom"


# --- the parsed YAML ---

@dataclass(frozen=True)
class LabelSpec:
    """One label: `field` of the key (None: the whole key) through `decoder`."""

    name: str
    field: Optional[str]
    decoder: str
    enumerators: tuple[tuple[int, str], ...] = ()  # the enum decoder's names, from BTF


@dataclass(frozen=True)
class Buckets:
    """How a histogram's bucket index maps to an upper bound (see the module docstring)."""

    kind: str  # log2 | linear | fixed
    width: int = 1
    bounds: tuple[float, ...] = ()
    max_bucket: Optional[int] = None

    def finite(self, highest_seen: int) -> int:
        """How many buckets have a bound: the rest count only toward +Inf."""
        if self.kind == "fixed":
            return len(self.bounds)
        if self.max_bucket is not None:
            return self.max_bucket
        return min(highest_seen + 1, 64 if self.kind == "log2" else _MAX_BUCKETS)  # a bad index must not cost

    def upper(self, index: int) -> float:
        """The largest value bucket `index` holds."""
        if self.kind == "log2":
            return float((1 << (index + 1)) - 1)
        if self.kind == "linear":
            return float((index + 1) * self.width - 1)
        return self.bounds[index]


@dataclass(frozen=True)
class MetricSpec:
    kind: str  # counter | gauge | histogram
    name: str
    help: str
    map: str
    value: Optional[str]  # None: the value is one number
    labels: tuple[LabelSpec, ...]
    multiplier: float = 1.0
    bucket_field: Optional[str] = None  # histograms only, as the three below
    buckets: Optional[Buckets] = None
    sum_field: Optional[str] = None


@dataclass(frozen=True)
class AttachSpec:
    xdp: tuple[str, ...] = ()
    xdp_mode: XdpMode = XdpMode.AUTO
    tc_ingress: tuple[str, ...] = ()
    tc_egress: tuple[str, ...] = ()
    perf_frequency: int = 99


@dataclass(frozen=True)
class MetricsSpec:
    """A metrics YAML checked against one object: what to export, and how each program attaches."""

    metrics: tuple[MetricSpec, ...]
    attach: AttachSpec
    plans: tuple[tuple[str, Callable[[Program], Link]], ...]  # (program, how it attaches)

    @property
    def maps(self) -> list[str]:
        return sorted({m.map for m in self.metrics})


def load_metrics(path: Path, spec: ObjectSpec, *, name: Optional[str] = None) -> MetricsSpec:
    """Reads a metrics YAML and checks it against `spec`'s maps, BTF and programs; messages call the
    object `name` (by default libbpf's name for it)."""
    source = os.fspath(path)
    try:
        with open(source) as f:
            document = yaml.safe_load(f)
    except OSError as exc:
        raise ConfigError(source, f"cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ConfigError(where, f"not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    return parse_metrics(document, spec, source=source, name=name)


def parse_metrics(document: Any, spec: ObjectSpec, *, source: str = "", name: Optional[str] = None) -> MetricsSpec:
    """Checks a parsed metrics YAML against `spec`; raises ConfigError naming the field."""
    name = name or spec.name
    top = Fields(document, "", source)
    metrics: list[MetricSpec] = []
    seen: dict[str, str] = {}
    for section, kind in (("counters", "counter"), ("gauges", "gauge"), ("histograms", "histogram")):
        for metric in top.items(section, functools.partial(_metric, kind=kind, spec=spec, object_name=name)):
            index = sum(m.kind == kind for m in metrics)
            if metric.name in seen:
                raise top.error(f"{section}[{index}].name",
                                f"{metric.name!r} is already the name of {seen[metric.name]}")
            seen[metric.name] = f"{section}[{index}]"
            metrics.append(metric)
    attach_fields = top.child("attach")
    attach = _attach(attach_fields)
    top.done()
    if not metrics:
        raise top.error("", "no metrics: give counters, gauges or histograms")
    return MetricsSpec(tuple(metrics), attach, _plans(spec, name, attach, attach_fields))


def _metric(f: Fields, kind: str, spec: ObjectSpec, object_name: str) -> MetricSpec:
    name = f.required_string("name")
    map_name = f.required_string("map")
    help_text = f.string("help") or f"{kind.capitalize()} from map {map_name}"
    if not _METRIC_NAME.fullmatch(name):
        raise f.error("name", f"{name!r} is not a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)")
    if kind == "counter" and not name.endswith("_total"):
        raise f.error("name", f"a counter's name ends with _total: {name!r}")
    if kind != "counter" and name.endswith(("_total", "_bucket", "_count", "_sum")):
        raise f.error("name", f"{name!r} ends with a suffix Prometheus keeps for counters and histograms")
    mapspec = _readable_map(f, spec, object_name, map_name)
    key, value = mapspec.key, mapspec.value
    assert key is not None and value is not None
    value_field = _value_field(f, "value", value, map_name, integer=kind == "histogram")
    multiplier = f.number("multiplier", 1.0, 1e-18, 1e18)
    bucket_field = buckets = sum_field = None
    if kind == "histogram":
        bucket_field = f.required_string("bucket_field")
        fields = key.fields()
        if bucket_field not in fields:
            raise f.error("bucket_field", _no_field(key, bucket_field))
        if not _is_integer(key.btf, fields[bucket_field]):
            shown = key.btf.type_name(fields[bucket_field])
            raise f.error("bucket_field", f"{bucket_field} is {shown}, not an integer")
        buckets = _buckets(f)
        if f.has("sum_field"):
            f.required_string("sum_field")
            sum_field = _value_field(f, "sum_field", value, map_name, integer=False)
    labels = tuple(f.items("labels", lambda lf: _label(lf, key, map_name)))
    for i, label in enumerate(labels):
        if any(other.name == label.name for other in labels[:i]):
            raise f.error(f"labels[{i}].name", f"label {label.name!r} is given twice")
        if kind == "histogram" and label.name == "le":
            raise f.error(f"labels[{i}].name", "le is the bucket label of a histogram")
        if bucket_field is not None and label.field == bucket_field:
            raise f.error(f"labels[{i}].field", f"{bucket_field} is the bucket_field, not a label")
    f.done()
    return MetricSpec(kind, name, help_text, map_name, value_field, labels, multiplier, bucket_field, buckets,
                      sum_field)


def _user_maps(spec: ObjectSpec) -> list[str]:
    return sorted(name for name in spec.maps if "." not in name)  # .rodata, .bss, .data are libbpf's own


def _readable_map(f: Fields, spec: ObjectSpec, object_name: str, name: str) -> MapSpec:
    mapspec = spec.maps.get(name) if "." not in name else None
    if mapspec is None:
        raise f.error("map", f"no map {name!r} in {object_name} (it has: {', '.join(_user_maps(spec)) or 'none'})")
    map_type = mapspec.type
    if map_type not in _READABLE_MAPS:
        shown = MapType(map_type).name.lower() if map_type in MapType._value2member_map_ else f"type {map_type}"
        raise f.error("map", f"{name} is a {shown} map; metrics read hash and array maps (per-CPU or LRU too)")
    for role, codec in (("key", mapspec.key), ("value", mapspec.value)):
        if codec is None:
            raise f.error("map", f"{name} has no BTF type for its {role}: declare it with __type({role}, ...)")
    return mapspec


def _no_field(codec: TypeCodec, name: str) -> str:
    return f"{codec.name} has no field {name!r} (it has: {', '.join(codec.fields()) or 'none'})"


def _value_field(f: Fields, key: str, value: TypeCodec, map_name: str, *, integer: bool) -> Optional[str]:
    """A number field of the value struct, or None where the value is a number itself."""
    name = f.string(key)
    fields = value.fields()
    if name is None:
        if fields:
            raise f.error(key, f"is required: the value of map {map_name} is {value.name} "
                               f"(fields: {', '.join(fields)})")
        if not _is_number(value.btf, value.type_id, integer=integer):
            raise f.error(key, f"the value of map {map_name} is {value.name}, not a number")
        return None
    if not fields:
        raise f.error(key, f"the value of map {map_name} is {value.name}, which has no fields; leave {key} out")
    if name not in fields:
        raise f.error(key, _no_field(value, name))
    if not _is_number(value.btf, fields[name], integer=integer):
        what = "an integer" if integer else "a number"
        raise f.error(key, f"{name} is {value.btf.type_name(fields[name])}, not {what}")
    return name


def _buckets(f: Fields) -> Buckets:
    kind = f.string("buckets")
    if kind not in ("log2", "linear", "fixed"):
        raise f.error("buckets", f"must be log2, linear or fixed, not {kind!r}")
    width = f.integer("bucket_width", None, 1, 1 << 62) if kind == "linear" or f.has("bucket_width") else None
    if kind == "linear" and width is None:
        raise f.error("bucket_width", "is required for linear buckets (the values one bucket spans)")
    if kind != "linear" and width is not None:
        raise f.error("bucket_width", "is for linear buckets only")
    bounds: tuple[float, ...] = ()
    if kind == "fixed" or f.has("bucket_bounds"):
        raw = f.raw("bucket_bounds")
        if kind != "fixed":
            raise f.error("bucket_bounds", "is for fixed buckets only")
        if (not isinstance(raw, list) or not raw
                or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in raw)):
            raise f.error("bucket_bounds", "must be a list of numbers, one upper bound per bucket index")
        bounds = tuple(float(b) for b in raw)
        if any(low >= high for low, high in zip(bounds, bounds[1:])):
            raise f.error("bucket_bounds", "must increase strictly")
    max_bucket = f.integer("max_bucket", None, 1, _MAX_BUCKETS) if f.has("max_bucket") else None
    if kind == "fixed" and max_bucket is not None:
        raise f.error("max_bucket", "is for log2 and linear buckets; fixed buckets end with their last bound")
    if kind == "log2" and max_bucket is not None and max_bucket > 64:
        raise f.error("max_bucket", f"log2 of a 64-bit value is at most 63, so {max_bucket} cannot be reached")
    return Buckets(kind, width or 1, bounds, max_bucket)


# --- labels ---

def _is_integer(btf: Btf, type_id: int) -> bool:
    t = btf.resolve(type_id)
    return t.kind in (Kind.INT, Kind.ENUM, Kind.ENUM64) and t.size in (1, 2, 4, 8)


def _is_number(btf: Btf, type_id: int, *, integer: bool) -> bool:
    t = btf.resolve(type_id)
    return (t.kind == Kind.INT and t.size in (1, 2, 4, 8)) or (not integer and t.kind == Kind.FLOAT)


def _byte_array(btf: Btf, type_id: int) -> Optional[int]:
    """The length of a char or __u8 array, else None."""
    t = btf.resolve(type_id)
    if t.kind != Kind.ARRAY:
        return None
    elem = btf.resolve(t.ref)
    return t.nelems if elem.kind == Kind.INT and elem.size == 1 else None


def _decoder_fits(decoder: str, btf: Btf, type_id: int) -> Optional[str]:
    """None if `decoder` can read a field of this type, else what it needs."""
    t = btf.resolve(type_id)
    size = btf.size_of(type_id)
    if decoder == "int":
        return None if _is_integer(btf, type_id) else "an integer field"
    if decoder == "string":
        return None if _byte_array(btf, type_id) else "a char or __u8 array"
    if decoder == "comm":
        return None if _byte_array(btf, type_id) == _TASK_COMM_LEN else "a char[16] (TASK_COMM_LEN)"
    if decoder == "ipv4":
        return None if (t.kind == Kind.INT and size == 4) or _byte_array(btf, type_id) == 4 \
            else "a 4-byte field (__be32 or __u8[4])"
    if decoder == "ipv6":
        return None if _byte_array(btf, type_id) == 16 or (t.kind in (Kind.STRUCT, Kind.UNION) and size == 16) \
            else "a 16-byte field (__u8[16] or struct in6_addr)"
    if decoder == "cgroup":
        return None if t.kind == Kind.INT and size == 8 else "a __u64 cgroup id"
    if decoder == "ksym":
        return None if (t.kind == Kind.INT and size == 8) or t.kind == Kind.PTR else "a __u64 or pointer"
    return None if t.kind in (Kind.ENUM, Kind.ENUM64) and t.enumerators else "an enum field"


def _default_decoder(btf: Btf, type_id: int) -> Optional[str]:
    t = btf.resolve(type_id)
    if t.kind in (Kind.ENUM, Kind.ENUM64):
        return "enum"
    if t.kind == Kind.ARRAY and btf.resolve(t.ref).is_char and btf.resolve(t.ref).size == 1:
        return "string"
    return "int" if _is_integer(btf, type_id) else None


def _label(f: Fields, key: TypeCodec, map_name: str) -> LabelSpec:
    field = f.string("field")
    name = f.string("name") or field
    decoder = f.string("decoder")
    f.done()
    if not name:
        raise f.error("name", "is required")
    if not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
        raise f.error("name", f"{name!r} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, no leading __)")
    fields = key.fields()
    if field is None:
        if fields:
            raise f.error("field", f"is required: the key of map {map_name} is {key.name} "
                                   f"(fields: {', '.join(fields)})")
        type_id = key.type_id
        what = f"the key of map {map_name} ({key.name})"
    else:
        if not fields:
            raise f.error("field", f"the key of map {map_name} is {key.name}, which has no fields; leave field out")
        if field not in fields:
            raise f.error("field", _no_field(key, field))
        type_id = fields[field]
        what = f"{field} ({key.btf.type_name(type_id)})"
    btf = key.btf
    if decoder is None:
        decoder = _default_decoder(btf, type_id)
        if decoder is None:
            raise f.error("decoder", f"is required for {what}: one of {', '.join(DECODERS)}")
    if decoder not in DECODERS:
        raise f.error("decoder", f"must be one of {', '.join(DECODERS)}, not {decoder!r}")
    needs = _decoder_fits(decoder, btf, type_id)
    if needs:
        raise f.error("decoder", f"{decoder} needs {needs}; {what} is not one")
    t = btf.resolve(type_id)
    enumerators = tuple((value, label) for label, value in t.enumerators) if decoder == "enum" else ()
    return LabelSpec(name, field, decoder, enumerators)


# --- attaching ---

def _attach(f: Fields) -> AttachSpec:
    mode = f.string("xdp_mode", "auto") or "auto"
    try:
        xdp_mode = XdpMode(mode)
    except ValueError:
        raise f.error("xdp_mode", f"must be auto, native or generic, not {mode!r}") from None
    lists = {}
    for key in ("xdp", "tc_ingress", "tc_egress"):
        names = f.strings(key, [])
        for i, iface in enumerate(names):
            try:
                netdev.ifindex(iface)
            except BpfscopeError as exc:
                raise f.error(f"{key}[{i}]", str(exc)) from None
        if len(set(names)) != len(names):
            raise f.error(key, "names an interface twice")
        lists[key] = tuple(names)
    frequency = f.integer("perf_frequency", 99, 1, 100_000)
    assert frequency is not None
    f.done()
    return AttachSpec(lists["xdp"], xdp_mode, lists["tc_ingress"], lists["tc_egress"], frequency)


def _plans(spec: ObjectSpec, object_name: str, attach: AttachSpec,
           f: Fields) -> tuple[tuple[str, Callable[[Program], Link]], ...]:
    """How each program attaches, decided from its section before anything loads."""
    plans: list[tuple[str, Callable[[Program], Link]]] = []
    xdp_programs, tc_programs = [], []
    for program in spec.programs.values():
        if not program.autoload:
            continue
        section = program.section
        kind, _, rest = section.partition("/")
        where = f"{object_name}: program {program.name!r}"
        if kind in ("tracepoint", "tp"):
            category, _, event = rest.partition("/")
            if not category or not event or "/" in event:
                raise ConfigError(where, f"SEC({section!r}) names no tracepoint: write SEC(\"{kind}/CATEGORY/NAME\")")
            tracing = tracefs_path()
            if tracing and not os.path.isdir(os.path.join(tracing, "events", category, event)):
                raise ConfigError(where, f"SEC({section!r}): no tracepoint {category}:{event} on this kernel")
            plans.append((program.name, functools.partial(_attach_tracepoint, category=category, event=event)))
        elif kind in ("uprobe", "uretprobe", "uprobe.s", "uretprobe.s"):
            plans.append((program.name, _uprobe_plan(where, section, kind, rest)))
        elif section == "perf_event":
            plans.append((program.name, functools.partial(_attach_perf_event, frequency=attach.perf_frequency)))
        elif section in ("xdp", "xdp.frags"):
            xdp_programs.append(program.name)
            for iface in attach.xdp:
                plans.append((program.name, functools.partial(_attach_xdp, iface=iface, mode=attach.xdp_mode)))
        elif section == "tc":
            tc_programs.append(program.name)
            for direction, ifaces in ((TcDirection.INGRESS, attach.tc_ingress), (TcDirection.EGRESS, attach.tc_egress)):
                for iface in ifaces:
                    plans.append((program.name, functools.partial(_attach_tc, iface=iface, direction=direction)))
        else:
            raise ConfigError(where, f"the agent cannot attach SEC({section!r}) programs; it attaches tracepoint/, "
                              "tp/, uprobe/, uretprobe/, perf_event, xdp and tc (kprobes and fentry: not on "
                              "every kernel)")
    for key, programs, ifaces, sec in (("xdp", xdp_programs, attach.xdp, "xdp"),
                                       ("tc_ingress", tc_programs, attach.tc_ingress + attach.tc_egress, "tc")):
        if programs and not ifaces:
            raise f.error(key, f"is required: SEC(\"{sec}\") program {programs[0]!r} needs an interface")
        if ifaces and not programs:
            raise f.error(key, f"{object_name} has no SEC(\"{sec}\") program to attach")
    if len(xdp_programs) > 1 and attach.xdp:
        raise f.error("xdp", f"SEC(\"xdp\") programs {', '.join(xdp_programs)}: an interface takes one XDP program")
    return tuple(plans)


def _uprobe_plan(where: str, section: str, kind: str, target: str) -> Callable[[Program], Link]:
    binary, sep, function = target.partition(":")
    if not binary or not sep or not function:
        raise ConfigError(where, f"SEC({section!r}) names no function: write SEC(\"{kind}/BINARY:FUNCTION\")")
    symbol, plus, offset_text = function.partition("+")
    try:
        offset = int(offset_text, 0) if plus else 0
        path = resolve_binary(binary)
    except ValueError:
        raise ConfigError(where, f"SEC({section!r}): {offset_text!r} is not an offset") from None
    except BpfscopeError as exc:
        raise ConfigError(where, f"SEC({section!r}): {exc}") from None
    return functools.partial(_attach_uprobe, path=path, symbol=symbol, offset=offset,
                             retprobe=kind.startswith("uretprobe"))


def _attach_tracepoint(program: Program, *, category: str, event: str) -> Link:
    return program.attach_tracepoint(category, event)


def _attach_uprobe(program: Program, *, path: str, symbol: str, offset: int, retprobe: bool) -> Link:
    return program.attach_uprobe(path, symbol, offset=offset, retprobe=retprobe)


def _attach_perf_event(program: Program, *, frequency: int) -> Link:
    return program.attach_perf_event(frequency=frequency)


def _attach_xdp(program: Program, *, iface: str, mode: XdpMode) -> Link:
    return program.attach_xdp(iface, mode=mode)


def _attach_tc(program: Program, *, iface: str, direction: TcDirection) -> Link:
    return program.attach_tc(iface, direction=direction)


# --- reading maps into metrics ---

class _Kallsyms:
    """Kernel symbols by address. Read once, at open: /proc/kallsyms shows addresses only to a
    process with CAP_SYSLOG, which the agent may give up after starting."""

    def __init__(self, path: str = "/proc/kallsyms") -> None:
        addresses: list[int] = []
        names: list[str] = []
        with open(path) as f:
            for line in f:
                parts = line.split(maxsplit=3)
                if len(parts) >= 3 and int(parts[0], 16):  # all zeros: addresses hidden (kptr_restrict)
                    addresses.append(int(parts[0], 16))
                    names.append(parts[2])
        order = np.argsort(np.array(addresses, dtype=np.uint64), kind="stable")
        ordered = np.array(addresses, dtype=np.uint64)[order]
        self._addresses, first = np.unique(ordered, return_index=True)  # an alias: the name listed first
        self._names = [names[i] for i in order[first].tolist()]

    def names(self, raw: np.ndarray[Any, Any]) -> list[str]:
        addresses = np.ascontiguousarray(raw).view(np.uint64)
        index = np.searchsorted(self._addresses, addresses, side="right") - 1
        return [self._names[i] if i >= 0 else f"{a:#x}" for i, a in zip(index.tolist(), addresses.tolist())]


def _scalars(column: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """A key column as one sortable scalar per row: integers and char arrays as they are, anything
    else (a __u8[16], a struct) as raw bytes."""
    if column.ndim == 1 and column.dtype.kind in "biuS":
        return column
    dense = np.ascontiguousarray(column)
    size = dense.dtype.itemsize * int(np.prod(dense.shape[1:], dtype=np.int64))
    return dense.view(np.dtype(f"V{size}")).reshape(len(dense))


def _octets(raw: np.ndarray[Any, Any], width: int) -> list[list[int]]:
    """Each value's bytes as they lie in memory: network order for an address."""
    octets: list[list[int]] = np.ascontiguousarray(raw).view(np.uint8).reshape(-1, width).tolist()
    return octets


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")


def _ipv6(octets: list[int]) -> str:
    address = ipaddress.IPv6Address(bytes(octets))
    return str(address.ipv4_mapped or address)


Converter = Callable[[np.ndarray[Any, Any]], list[str]]


class _Label:
    """One label of one metric: each distinct raw value is decoded once and remembered."""

    def __init__(self, spec: LabelSpec, convert: Converter, *, remember_empty: bool = True) -> None:
        self.spec = spec
        self._convert = convert
        self._remember_empty = remember_empty  # a cgroup not seen yet is "" now, its path later
        self._cache: dict[Any, str] = {}

    def read(self, keys: np.ndarray[Any, Any]) -> tuple[list[str], np.ndarray[Any, Any]]:
        """The distinct label values, and for each row the index of its value."""
        column = keys if self.spec.field is None else keys[self.spec.field]
        uniques, inverse = np.unique(_scalars(column), return_inverse=True)
        raw = uniques.tolist()
        missing = [i for i, value in enumerate(raw) if value not in self._cache]
        decoded = dict(zip((raw[i] for i in missing), self._convert(uniques[missing]))) if missing else {}
        texts = [decoded[value] if value in decoded else self._cache[value] for value in raw]
        if len(self._cache) + len(decoded) > _CACHE_LIMIT:
            self._cache.clear()
        self._cache.update((k, v) for k, v in decoded.items() if v or self._remember_empty)
        # Distinct raw values may decode alike (bytes after a NUL, two gone cgroups): one index per text.
        distinct = list(dict.fromkeys(texts))
        position = {text: i for i, text in enumerate(distinct)}
        remap = np.array([position[text] for text in texts], dtype=np.intp)
        return distinct, remap[inverse.reshape(-1)]


def _converter(label: LabelSpec, kallsyms: Optional[_Kallsyms], resolver: Optional[ContainerResolver]) -> Converter:
    decoder = label.decoder
    if decoder == "int":
        return lambda raw: [str(v) for v in raw.tolist()]
    if decoder in ("string", "comm"):
        return lambda raw: [_text(v) for v in raw.tolist()]
    if decoder == "ipv4":
        return lambda raw: [".".join(map(str, octets)) for octets in _octets(raw, 4)]
    if decoder == "ipv6":
        return lambda raw: [_ipv6(octets) for octets in _octets(raw, 16)]
    if decoder == "cgroup":
        assert resolver is not None
        return lambda raw: [resolver.path(v) for v in raw.tolist()]
    if decoder == "ksym":
        assert kallsyms is not None
        return kallsyms.names
    names = dict(label.enumerators)
    return lambda raw: [names.get(v, str(v)) for v in raw.tolist()]


def _sum_by(group: np.ndarray[Any, Any], count: int, column: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Adds `column` up per group, in integers where it is integers (exact past 2^53)."""
    kind = column.dtype.kind
    total_type = np.float64 if kind == "f" else np.uint64 if kind in "ub" else np.int64
    totals = np.zeros(count, dtype=total_type)
    np.add.at(totals, group, column.astype(total_type))
    return totals


class _Exported:
    """One metric of the YAML over its map's batch of keys and values."""

    def __init__(self, spec: MetricSpec, labels: list[_Label]) -> None:
        self.spec = spec
        self.labels = labels
        self.label_names = [label.spec.name for label in labels]

    def _groups(self, keys: np.ndarray[Any, Any]) -> tuple[list[tuple[str, ...]], np.ndarray[Any, Any]]:
        """The distinct label tuples, and for each row the index of its tuple."""
        if not self.labels:
            return [()], np.zeros(len(keys), dtype=np.intp)
        if not len(keys):
            return [], np.zeros(0, dtype=np.intp)
        texts, codes = zip(*(label.read(keys) for label in self.labels))
        rows, group = np.unique(np.stack(codes, axis=1), axis=0, return_inverse=True)
        names = [tuple(texts[i][code] for i, code in enumerate(row)) for row in rows.tolist()]
        return names, group.reshape(-1)

    def family(self, keys: np.ndarray[Any, Any], values: np.ndarray[Any, Any]) -> Metric:
        spec = self.spec
        names, group = self._groups(keys)
        order = sorted(range(len(names)), key=names.__getitem__)
        column = values if spec.value is None else values[spec.value]
        if spec.kind == "histogram":
            return self._histogram(keys, values, column, names, group, order)
        totals = _sum_by(group, len(names), column).tolist()
        family = (CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily)(
            spec.name, spec.help, labels=self.label_names)
        for g in order:
            family.add_metric(list(names[g]), totals[g] * spec.multiplier)
        return family

    def _histogram(self, keys: np.ndarray[Any, Any], values: np.ndarray[Any, Any], counts: np.ndarray[Any, Any],
                   names: list[tuple[str, ...]], group: np.ndarray[Any, Any], order: list[int]) -> Metric:
        spec = self.spec
        assert spec.buckets is not None and spec.bucket_field is not None
        slots = keys[spec.bucket_field].astype(np.int64)
        finite = spec.buckets.finite(int(slots.max()) if len(slots) else -1)
        index = np.where((slots >= 0) & (slots < finite), slots, finite)  # the rest: only in +Inf
        table = np.zeros((len(names), finite + 1), dtype=np.uint64)
        np.add.at(table, (group, index), counts.astype(np.uint64))
        cumulative = np.cumsum(table, axis=1).tolist()
        bounds = [repr(spec.buckets.upper(i) * spec.multiplier) for i in range(finite)] + ["+Inf"]
        sums = _sum_by(group, len(names), values[spec.sum_field]).tolist() if spec.sum_field else None
        family = HistogramMetricFamily(spec.name, spec.help, labels=self.label_names)
        for g in order:
            family.add_metric(list(names[g]), list(zip(bounds, cumulative[g])),
                              None if sums is None else sums[g] * spec.multiplier)
        return family


# --- the source ---

def _basename(path: Path) -> str:
    return path.name.removesuffix(".c").removesuffix(".o").removesuffix(".bpf")


def _cache_dir() -> Path:
    """/var/cache/bpfscope/custom for root, else a directory of this user's under /tmp."""
    for candidate in (Path(_DEFAULT_CACHE), Path(tempfile.gettempdir()) / f"bpfscope-custom-{os.getuid()}"):
        with contextlib.suppress(OSError):
            candidate.mkdir(parents=True, exist_ok=True)
            if os.access(candidate, os.W_OK):
                return candidate
    raise BpfscopeError(errno.EACCES, f"no writable directory to build custom programs in (tried {_DEFAULT_CACHE})")


def build_cached(source: Path, cache_dir: Optional[Path] = None) -> Path:
    """The object of `source`, compiled once into the cache and compiled again only when the source,
    the headers beside it, bpfscope's headers or the compile command change."""
    directory = cache_dir or _cache_dir()
    digest = hashlib.sha256("\0".join(build.compile_command(source, "-")).encode())
    digest.update(source.read_bytes())
    for header in sorted([*source.parent.glob("*.h"), *build.include_dir().rglob("*.h")]):
        stat = header.stat()
        digest.update(f"{header}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    output = directory / f"{_basename(source)}-{digest.hexdigest()[:16]}.bpf.o"
    if output.is_file():
        return output
    directory.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=directory, prefix=f".{output.name}.", suffix=".tmp")
    os.close(fd)
    try:
        build.compile_object(source, partial)
        os.replace(partial, output)  # whole or not at all, should two agents build at once
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
    return output


class CustomProgram(Source):
    """A user's program as an agent source: `open()` builds (a .bpf.c), checks the metrics YAML
    against the object's BTF, pins the maps it reads, loads and attaches; `collect()` reads each of
    those maps once per scrape, in one batch."""

    def __init__(self, config: CustomConfig, pin_dir: str, *, resolver: Optional[ContainerResolver] = None,
                 cache_dir: Optional[Path] = None) -> None:
        super().__init__(pin_dir)
        self.config = config
        self.name = _basename(config.object)
        self.resolver = resolver
        self.cache_dir = cache_dir
        self._obj: Optional[Object] = None
        self._links: list[Link] = []
        self._exported: list[_Exported] = []
        self._scrape = threading.Lock()  # Prometheus and OTLP may scrape at once; label caches are shared

    @property
    def maps_pin_dir(self) -> str:
        """Where the maps the metrics read are pinned."""
        return pin_subdir(self.pin_dir, self.name)

    def open(self) -> None:
        if self._obj is not None:
            raise BpfscopeError(errno.EBUSY, f"custom program {self.name} is already open")
        source = self.config.object
        spec = ObjectSpec.open(build_cached(source, self.cache_dir) if source.name.endswith(".c") else source)
        fresh: list[str] = []  # pins this open makes (not taken over): gone again if it fails
        try:
            metrics = load_metrics(self.config.metrics, spec, name=self.name)
            exported = self._exporters(metrics)
            for name in metrics.maps:
                pin = os.path.join(self.maps_pin_dir, name)
                if not spec.maps[name].pin_to(pin):
                    fresh.append(pin)
            obj = spec.load()
        except BaseException:
            spec.close()
            self._unpin(fresh)
            raise
        links: list[Link] = []
        try:
            for program, attach in metrics.plans:
                links.append(attach(obj.programs[program]))
        except BaseException:
            _detach(links)
            obj.close()
            self._unpin(fresh)
            raise
        self._obj, self._links, self._exported = obj, links, exported

    def _exporters(self, metrics: MetricsSpec) -> list[_Exported]:
        decoders = {label.decoder for metric in metrics.metrics for label in metric.labels}
        kallsyms = _Kallsyms() if "ksym" in decoders else None
        resolver = self.resolver or (ContainerResolver() if "cgroup" in decoders else None)
        return [
            _Exported(metric, [_Label(label, _converter(label, kallsyms, resolver),
                                      remember_empty=label.decoder != "cgroup") for label in metric.labels])
            for metric in metrics.metrics
        ]

    def _unpin(self, pins: list[str]) -> None:
        for pin in pins:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(pin)
        with contextlib.suppress(OSError):
            os.rmdir(self.maps_pin_dir)  # only if nothing else is pinned there

    def collect(self) -> Iterator[Metric]:
        obj = self._obj
        if obj is None:
            raise BpfscopeError(errno.EBADF, f"custom program {self.name} is not open")
        batches: dict[str, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]] = {}
        families: list[Metric] = []
        with self._scrape:
            for exported in self._exported:
                name = exported.spec.map
                if name not in batches:
                    batches[name] = _read(obj.maps[name])
                families.append(exported.family(*batches[name]))
        yield from families

    def close(self) -> None:
        """Detaches and closes; the pins stay (the agent removes its pin directory when it is done)."""
        links, self._links = self._links, []
        _detach(links)
        obj, self._obj = self._obj, None
        if obj is not None:
            obj.close()
        self._exported = []


def _read(m: Map) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    return m.lookup_batch_sum() if isinstance(m, PerCpuHashMap) else m.lookup_batch()


def _detach(links: list[Link]) -> None:
    for link in reversed(links):
        with contextlib.suppress(OSError):  # one that cannot detach (its interface gone) must not hold up the rest
            link.close()
