"""The metrics YAML of a custom program, parsed and checked against its object's maps and BTF (the
package docstring describes the format): each mistake is one ConfigError naming the field."""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from ...btf import Btf, Kind, TypeCodec
from ...maps import MapType
from ...object import MapSpec, ObjectSpec
from ..config import ConfigError, Fields
from .attach import Attach, AttachSpec, plan_attach, read_attach

__all__ = ["DECODERS", "Buckets", "LabelSpec", "MetricSpec", "MetricsSpec", "load_metrics", "parse_metrics"]

DECODERS = ("int", "string", "comm", "ipv4", "ipv6", "cgroup", "ksym", "enum")

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_TASK_COMM_LEN = 16
_READABLE_MAPS = {MapType.HASH, MapType.LRU_HASH, MapType.ARRAY, MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH,
                  MapType.PERCPU_ARRAY}
_MAX_BUCKETS = 4096  # linear buckets with a bound, when max_bucket does not say


@dataclass(frozen=True)
class LabelSpec:
    """One label: `field` of the key (None: the whole key) through `decoder`."""

    name: str
    field: Optional[str]
    decoder: str
    enumerators: tuple[tuple[int, str], ...] = ()  # the enum decoder's names, from BTF


@dataclass(frozen=True)
class Buckets:
    """How a histogram's bucket index maps to an upper bound (see the package docstring)."""

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
class MetricsSpec:
    """A metrics YAML checked against one object: what to export, and how each program attaches."""

    metrics: tuple[MetricSpec, ...]
    attach: AttachSpec
    plans: tuple[tuple[str, Attach], ...]  # (program, how it attaches)

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
    attach = read_attach(attach_fields)
    top.done()
    if not metrics:
        raise top.error("", "no metrics: give counters, gauges or histograms")
    return MetricsSpec(tuple(metrics), attach, plan_attach(spec, name, attach, attach_fields))


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
