"""`bpfscope gen`: the bpf2go step for Python. Compiles a .bpf.c and writes a module beside it that
knows the object: its types from BTF as numpy dtypes and frozen dataclasses (enums as IntEnum), its
programs, maps, ring buffers and `const volatile` knobs as typed attributes, and a .pyi stub, so
editors complete the names and mypy checks their use. The text depends on the source, the headers
and the generator only (no version, path or time), so `--check` can regenerate it and compare, as CI
does for bpf2go.

The first half of this module is what generated modules import at run time (typed maps and ring
buffers, knobs, `bind`): written and tested once here instead of once per module."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import keyword
import os
import re
import tempfile
import textwrap
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, Optional, TypeVar, Union, cast, overload

import numpy as np

from .btf import Btf, Kind, frozen_record
from .build import compile_object
from .errors import BpfscopeError, TypeMismatchError
from .maps import Map, MapType, PerCpuHashMap, UpdateFlags
from .object import Config, Object, ObjectSpec, ProgramSpec
from .program import Program
from .ringbuf import RingBuffer

__all__ = [
    "GenError", "Knob", "Knobs", "LoadedObject", "Members", "OpenedSpec", "ProgramT", "Rings", "TypedMap",
    "TypedPerCpuMap", "TypedRingBuffer",
    "bind", "generate", "plain", "record", "render", "stale", "struct_dtype",
]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")
R = TypeVar("R")
ProgramT = TypeVar("ProgramT", ProgramSpec, Program)
_Ring = TypeVar("_Ring", bound="TypedRingBuffer[Any]")
_Array = np.ndarray[Any, np.dtype[Any]]

# --- run time: what generated modules import ---


def plain(value: Any) -> Any:
    """A value as numpy assigns it into a structured dtype: a dataclass as the tuple of its fields, a
    tuple (a C array) as a list, anything else as it is. bpfscope's own encoding goes through
    dataclasses.asdict, whose nested dicts numpy does not take."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return tuple(plain(getattr(value, field.name)) for field in dataclasses.fields(value))
    if isinstance(value, tuple):
        return [plain(item) for item in value]
    return value


def record(cls: type[T]) -> type[T]:
    """Gives a generated frozen dataclass the __init__ of bpfscope's own records (btf.frozen_record),
    which fills __dict__ directly: twice as fast as the dataclass one, for ring buffer readers that
    build millions of records a second."""
    names = [field.name for field in dataclasses.fields(cast(Any, cls))]
    cls.__init__ = frozen_record(cls.__name__, names).__init__  # type: ignore[method-assign, misc]
    return cls


def struct_dtype(itemsize: int, fields: Sequence[tuple[str, Any, int]]) -> np.dtype[np.void]:
    """The numpy dtype of a C struct: (name, format, byte offset) per field, padding included in
    `itemsize`; the layout bpfscope's TypeCodec derives from BTF."""
    return np.dtype({
        "names": [name for name, _, _ in fields],
        "formats": [fmt for _, fmt, _ in fields],
        "offsets": [offset for _, _, offset in fields],
        "itemsize": itemsize,
    })


_ROOT_KINDS = {"struct": Kind.STRUCT, "union": Kind.UNION, "enum": Kind.ENUM, "enum64": Kind.ENUM64,
               "typedef": Kind.TYPEDEF}


def _stale(what: str) -> TypeMismatchError:
    return TypeMismatchError(f"{what}: the object differs from the one the module was generated from; "
                             "run bpfscope gen again")


def _find_type(spec: ObjectSpec, path: str) -> int:
    """The BTF type id at `path`: a root (`struct NAME`, `typedef NAME`, `map NAME.key`, `export
    NAME`, `config NAME`), then member names; arrays stand for their elements. 0 if not there."""
    btf = spec.btf
    root, _, rest = path.partition(" ")
    name, *members = rest.split(".")
    type_id = 0
    if root == "map":
        map_spec = spec.maps.get(name)
        codec = getattr(map_spec, members.pop(0)) if map_spec is not None else None
        type_id = codec.type_id if codec is not None else 0
    elif root == "export":
        var = btf.find(f"__btf_export_{name}", Kind.VAR)
        type_id = btf.resolve(var.ref).ref if var is not None else 0
    elif root == "config":
        section = btf.find(".rodata", Kind.DATASEC)
        type_id = next((m.type_id for m in section.members if m.name == name), 0) if section is not None else 0
    elif root in _ROOT_KINDS:
        found = btf.find(name, _ROOT_KINDS[root])
        type_id = found.id if found is not None else 0
    type_id = _element(btf, type_id)
    for member in members:
        type_id = _element(btf, btf.codec(type_id).fields().get(member, 0)) if type_id else 0
    return type_id


def _element(btf: Btf, type_id: int) -> int:
    """An array's element type (through every dimension); any other type as it is."""
    while type_id and btf.resolve(type_id).kind == Kind.ARRAY:
        type_id = btf.resolve(type_id).ref
    return type_id


def bind(spec: ObjectSpec, types: Iterable[tuple[Any, str, Optional[np.dtype[Any]]]]) -> None:
    """Makes the values of each BTF type (found by its path, see _find_type) into the generated
    class, for this spec and the object it loads; checks first that the type still has the layout
    (struct) or the values (enum) the module was generated from, so a rebuilt object fails here."""
    btf = spec.btf
    for cls, path, dtype in types:
        type_id = _find_type(spec, path)
        if not type_id:
            raise _stale(f"no {path}")
        if dtype is not None:
            if btf.codec(type_id).dtype != dtype:
                raise _stale(f"{path} has another layout")
        elif sorted({value for _, value in btf.resolve(type_id).enumerators}) != sorted({int(m) for m in cls}):
            raise _stale(f"{path} has other values")
        btf.use_class(type_id, cls)


class _TypedMapBase(Generic[K]):
    """What typed maps share: the key side. `map` is the bpfscope Map underneath (batches, pins)."""

    def __init__(self, obj: Object, name: str, key: np.dtype[Any], value: np.dtype[Any]) -> None:
        self.map: Map = obj.maps[name]
        self.name = name
        for role, codec, expected in (("key", self.map.key, key), ("value", self.map.value, value)):
            if codec.dtype != expected:
                raise _stale(f"map {name!r}: its {role} {codec.name} has another layout")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.map!r}>"

    def delete(self, key: K) -> bool:
        """Removes `key`; False if it was not there."""
        return self.map.delete(plain(key))

    def __delitem__(self, key: K) -> None:
        if not self.map.delete(plain(key)):
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return plain(key) in self.map

    def keys(self) -> list[K]:
        return cast("list[K]", self.map.keys())

    def __iter__(self) -> Iterator[K]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.map)

    def lookup_batch(self) -> tuple[_Array, _Array]:
        """Every key and value as two numpy arrays of the module's dtypes (bpf_map_lookup_batch)."""
        return self.map.lookup_batch()

    def delete_batch(self, keys: Union[Sequence[K], _Array]) -> None:
        self.map.delete_batch(keys if isinstance(keys, np.ndarray) else [plain(key) for key in keys])

    def clear(self) -> None:
        self.map.clear()

    def pin(self, path: str) -> None:
        self.map.pin(path)


class TypedMap(_TypedMapBase[K], Generic[K, V]):
    """A map of a generated module: keys and values as the module's types (its dataclasses and
    IntEnums, int, bytes), whole maps as numpy arrays of its dtypes."""

    def lookup(self, key: K) -> Optional[V]:
        """The value for `key`, or None if it has none."""
        return cast("Optional[V]", self.map.lookup(plain(key)))

    def get(self, key: K, default: Optional[V] = None) -> Optional[V]:
        value = self.lookup(key)
        return default if value is None else value

    def __getitem__(self, key: K) -> V:
        value = self.lookup(key)
        if value is None:
            raise KeyError(key)
        return value

    def update(self, key: K, value: V, flags: UpdateFlags = UpdateFlags.ANY) -> None:
        self.map.update(plain(key), plain(value), flags)

    def __setitem__(self, key: K, value: V) -> None:
        self.update(key, value)

    def items(self) -> list[tuple[K, V]]:
        """Every entry, read in one batch."""
        return cast("list[tuple[K, V]]", self.map.items())

    def values(self) -> list[V]:
        return [value for _, value in self.items()]

    def update_batch(self, keys: Union[Sequence[K], _Array], values: Union[Sequence[V], _Array],
                     flags: UpdateFlags = UpdateFlags.ANY) -> None:
        """Writes many entries in one bpf_map_update_batch call."""
        self.map.update_batch(keys if isinstance(keys, np.ndarray) else [plain(key) for key in keys],
                              values if isinstance(values, np.ndarray) else [plain(value) for value in values],
                              flags)


class TypedPerCpuMap(_TypedMapBase[K], Generic[K, V]):
    """A per-CPU map of a generated module: a value per possible CPU, or `sum` for one."""

    def lookup(self, key: K) -> Optional[tuple[V, ...]]:
        """The values for `key`, one per possible CPU, or None if it has none."""
        return cast("Optional[tuple[V, ...]]", self.map.lookup(plain(key)))

    def get(self, key: K, default: Optional[tuple[V, ...]] = None) -> Optional[tuple[V, ...]]:
        values = self.lookup(key)
        return default if values is None else values

    def __getitem__(self, key: K) -> tuple[V, ...]:
        values = self.lookup(key)
        if values is None:
            raise KeyError(key)
        return values

    def update(self, key: K, value: Union[V, Sequence[V]], flags: UpdateFlags = UpdateFlags.ANY) -> None:
        """Sets `key` to one value on every CPU, or to a value per CPU."""
        values = value if isinstance(value, (list, tuple)) else [value]
        self.map.update(plain(key), [plain(v) for v in values], flags)

    def __setitem__(self, key: K, value: Union[V, Sequence[V]]) -> None:
        self.update(key, value)

    def items(self) -> list[tuple[K, tuple[V, ...]]]:
        return cast("list[tuple[K, tuple[V, ...]]]", self.map.items())

    def values(self) -> list[tuple[V, ...]]:
        return [values for _, values in self.items()]

    def update_batch(self, keys: Union[Sequence[K], _Array], values: Union[Sequence[V], _Array],
                     flags: UpdateFlags = UpdateFlags.ANY) -> None:
        """Writes many entries in one call, each value on every CPU."""
        self.map.update_batch(keys if isinstance(keys, np.ndarray) else [plain(key) for key in keys],
                              values if isinstance(values, np.ndarray) else [plain(value) for value in values],
                              flags)

    def sum(self, key: K) -> V:
        """One value for `key`: the CPUs' values added field by field."""
        return cast(V, cast(PerCpuHashMap, self.map).sum(plain(key)))

    def lookup_batch_sum(self) -> tuple[_Array, _Array]:
        """lookup_batch with the CPUs added up: one value per key."""
        return cast(PerCpuHashMap, self.map).lookup_batch_sum()


class TypedRingBuffer(RingBuffer, Generic[R]):
    """A RingBuffer whose records are the generated module's class (and its dtype, checked)."""

    def __init__(self, obj: Object, name: str, dtype: np.dtype[Any]) -> None:
        self.closed = False
        super().__init__(obj, name)
        if self.dtype != dtype:
            self.close()
            raise _stale(f"ring buffer {name!r}: its record {self.record.name} has another layout")

    def records(self, timeout_ms: int = 100) -> Iterator[R]:
        return cast("Iterator[R]", super().records(timeout_ms))

    def __iter__(self) -> Iterator[R]:
        return self.records()

    def __enter__(self: _Ring) -> _Ring:
        return self

    def close(self) -> None:
        self.closed = True
        super().close()


class Members(Generic[T]):
    """Base of a generated namespace of programs or maps: attributes instead of string keys, so
    mypy catches a misspelt name."""

    def __init__(self, members: Mapping[str, T], what: str) -> None:
        self._members = members
        self._what = what

    def _get(self, name: str) -> T:
        member = self._members.get(name)
        if member is None:
            raise BpfscopeError(errno.ENOENT, f"{self._what} {name!r} is not loaded: its autoload was off")
        return member


class Knobs:
    """Base of a generated Config: its Knob attributes read and write the object's .rodata."""

    def __init__(self, rodata: Config) -> None:
        self._rodata = rodata


class Knob(Generic[T]):
    """One `const volatile` global as a typed attribute: settable until the object loads."""

    def __init__(self, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: Any) -> Knob[T]: ...

    @overload
    def __get__(self, instance: Knobs, owner: Any) -> T: ...

    def __get__(self, instance: Optional[Knobs], owner: Any) -> Union[Knob[T], T]:
        if instance is None:
            return self
        return cast(T, instance._rodata[self.name])

    def __set__(self, instance: Knobs, value: T) -> None:
        instance._rodata[self.name] = plain(value)


class Rings:
    """Base of a generated namespace of ring buffer readers: each made on first use (again after
    the caller closed it, as `with obj.rings.events as events:` does), all closed with the object."""

    def __init__(self, obj: Object) -> None:
        self._object = obj
        self._readers: dict[str, TypedRingBuffer[Any]] = {}

    def _reader(self, name: str, dtype: np.dtype[Any]) -> TypedRingBuffer[Any]:
        reader = self._readers.get(name)
        if reader is None or reader.closed:
            reader = self._readers[name] = TypedRingBuffer(self._object, name, dtype)
        return reader

    def close(self) -> None:
        readers, self._readers = list(self._readers.values()), {}
        for reader in readers:
            reader.close()


class OpenedSpec:
    """Base of a generated spec class: the object opened, its classes bound to its BTF types (a spec
    that does not fit this module is closed and refused)."""

    def __init__(self, spec: ObjectSpec, types: Iterable[tuple[Any, str, Optional[np.dtype[Any]]]]) -> None:
        try:
            bind(spec, types)
        except BaseException:
            spec.close()
            raise
        self.spec = spec

    def close(self) -> None:
        """Drops the spec without loading it."""
        self.spec.close()


_Loaded = TypeVar("_Loaded", bound="LoadedObject")


class LoadedObject:
    """Base of a generated object class: the loaded object and its ring buffer readers, closed
    together (or on leaving a `with`)."""

    object: Object
    rings: Rings

    def close(self) -> None:
        self.rings.close()
        self.object.close()

    def __enter__(self: _Loaded) -> _Loaded:
        return self

    def __exit__(self, *exc: Any) -> None:  # (`object` here is the attribute above)
        self.close()


# --- generation ---

_MARKER = "# Code generated by bpfscope gen"
_WIDTH = 120
_PER_CPU = (MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH, MapType.PERCPU_ARRAY)
_BUILTINS = ("bool", "bytes", "float", "int", "tuple")
# Class names a generated module imports, which none of its own classes may take.
_IMPORTED = frozenset({"Any", "Knob", "Knobs", "LoadedObject", "Map", "MapSpec", "Members", "Object", "ObjectSpec",
                       "OpenedSpec", "Path", "Program", "ProgramSpec", "ProgramT", "Rings", "TypedMap",
                       "TypedPerCpuMap", "TypedRingBuffer"})
# What the module's own namespaces already use; a C name equal to one gets a trailing underscore.
# Knobs are also load()'s parameters, beside `path` and its local `spec`.
_RESERVED = {
    "config": frozenset({"_rodata", "path", "spec"}),
    "program": frozenset({"_get", "_members", "_what"}),
    "map": frozenset({"_get", "_members", "_what"}),
    "ring": frozenset({"close", "_object", "_reader", "_readers"}),
}


class GenError(BpfscopeError):
    """The object has something a generated module cannot say, or the output is not gen's to overwrite."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EINVAL, message)


def _camel(name: str) -> str:
    text = "".join(word[:1].upper() + word[1:] for word in re.split(r"[^0-9A-Za-z]+", name) if word)
    return text if text and not text[0].isdigit() else f"C{text}"


def _basename(source: Path) -> str:
    """map_types.bpf.c → map_types: the name the object, the module and its classes share."""
    for suffix in (".bpf.c", ".c"):
        if source.name.endswith(suffix) and len(source.name) > len(suffix):
            return source.name[: -len(suffix)]
    return source.stem


def _attribute(name: str, what: str) -> str:
    """A C name as a Python attribute of the namespace for `what`."""
    if name.startswith("__"):
        raise GenError(f"{what} {name!r}: a name starting with two underscores cannot be a Python attribute")
    return f"{name}_" if keyword.iskeyword(name) or name in _RESERVED[what] else name


def _attributes(names: Iterable[str], what: str) -> dict[str, str]:
    """C name → attribute, sorted by C name; two C names may not end up as one attribute."""
    attributes = {name: _attribute(name, what) for name in sorted(names)}
    if len(set(attributes.values())) < len(attributes):
        raise GenError(f"two {what}s would share a Python attribute: {', '.join(attributes)}")
    return attributes


@dataclasses.dataclass
class _Type:
    """A struct, union or enum that becomes a class (a struct with fields no dataclass can have
    keeps bpfscope's own records and gets only its dtype)."""

    type_id: int
    path: str  # where bind() finds it at run time
    hint: str  # the C name the class is named after
    c_name: str
    is_enum: bool
    has_class: bool
    name: str = ""
    dtype: str = ""


class _Model:
    """One object as a generated module sees it: its types, maps, programs, rings and knobs, with
    every Python name chosen."""

    def __init__(self, spec: ObjectSpec, base: str) -> None:
        self.btf: Btf = spec.btf
        self.spec = spec
        self.cls = _camel(base)
        if self.cls in _IMPORTED:
            raise GenError(f"{base!r} would name the module's class {self.cls}, a name the module imports; "
                           "rename the program")
        self.types: dict[int, _Type] = {}
        self.maps = _attributes((name for name in spec.maps if "." not in name), "map")
        self.programs = _attributes(spec.programs, "program")
        section = self.btf.find(".rodata", Kind.DATASEC)
        # Globals only: a function's static locals (bpf_printk's format string) are named func.var here.
        self.knob_types = ({m.name: m.type_id for m in section.members if "." not in m.name}
                           if section is not None else {})
        self.knobs = _attributes(self.knob_types, "config")
        exports = {t.name.removeprefix("__btf_export_"): self.btf.resolve(t.ref).ref
                   for t in self.btf if t.kind == Kind.VAR and t.name.startswith("__btf_export_")}
        self.rings = _attributes((name for name in self.maps if spec.maps[name].type == MapType.RINGBUF
                                  and name in exports), "ring")
        self.ring_types = {name: exports[name] for name in self.rings}
        for name in self.maps:
            for role in ("key", "value"):
                codec = getattr(spec.maps[name], role)
                if codec is not None:
                    self._visit(codec.type_id, f"map {name}.{role}", f"{name}_{role}")
        for name in sorted(exports):
            self._visit(exports[name], f"export {name}", name)
        for name in sorted(self.knob_types):
            self._visit(self.knob_types[name], f"config {name}", f"{name}_type")
        self._name_types()

    def _visit(self, type_id: int, path: str, hint: str) -> None:
        btf = self.btf
        t, typedef = btf[type_id], ""
        while t.kind in (Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.TYPE_TAG, Kind.ARRAY):
            typedef = typedef or (t.name if t.kind == Kind.TYPEDEF else "")
            t = btf[t.ref]
        if t.id in self.types or t.kind not in (Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.ENUM64):
            return
        is_enum = t.kind in (Kind.ENUM, Kind.ENUM64)
        if is_enum and not t.enumerators:
            return
        word = {Kind.STRUCT: "struct", Kind.UNION: "union", Kind.ENUM: "enum", Kind.ENUM64: "enum64"}[t.kind]
        if t.name:
            path, hint, c_name = f"{word} {t.name}", t.name, f"{'enum' if is_enum else word} {t.name}"
        elif typedef:
            path, hint, c_name = f"typedef {typedef}", typedef, f"typedef {typedef}"
        else:
            c_name = f"anonymous {'enum' if is_enum else word} at {path}"
        fields = btf.codec(t.id).fields()
        has_class = is_enum or all(not keyword.iskeyword(f) and not f.startswith("__") for f in fields)
        self.types[t.id] = _Type(t.id, path, hint, c_name, is_enum, has_class)
        for field, field_type in fields.items():
            self._visit(field_type, f"{path}.{field}", f"{hint}_{field}")

    def _name_types(self) -> None:
        taken = {self.cls + suffix for suffix in ("", "Spec", "Config", "Programs", "MapSpecs", "Maps", "Rings")}
        taken |= _IMPORTED | {"OBJECT"}

        def take(wanted: str) -> str:
            name, n = wanted, 2
            while name in taken:
                name, n = f"{wanted}{n}", n + 1
            taken.add(name)
            return name

        # Named types first, so an anonymous one never takes a name a named one wants.
        def anonymous(t: _Type) -> bool:
            return t.path.partition(" ")[0] not in _ROOT_KINDS or "." in t.path

        for t in sorted(self.types.values(), key=lambda t: (anonymous(t), t.hint, t.type_id)):
            t.name = take(_camel(t.hint))
        for t in sorted(self.types.values(), key=lambda t: t.name):
            if not t.is_enum:
                t.dtype = take(re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", t.name).upper() + "_DTYPE")

    # --- types as Python source ---

    def annotation(self, type_id: int, shadowed: frozenset[str] = frozenset()) -> str:
        """The Python type a value of this BTF type becomes (as TypeCodec.to_python makes it)."""

        def builtin(name: str) -> str:
            return f"builtins.{name}" if name in shadowed else name

        t = self.btf.resolve(type_id)
        if t.kind == Kind.INT:
            if t.is_bool and t.size == 1:
                return builtin("bool")
            return builtin("int") if t.size in (1, 2, 4, 8) else builtin("bytes")
        if t.kind in (Kind.ENUM, Kind.ENUM64):
            known = self.types.get(t.id)
            return f"{known.name} | {builtin('int')}" if known is not None else builtin("int")
        if t.kind == Kind.PTR:
            return builtin("int")
        if t.kind == Kind.FLOAT:
            return builtin("float")
        if t.kind == Kind.ARRAY:
            if self._is_chars(t.ref):
                return builtin("bytes")
            return f"{builtin('tuple')}[{self.annotation(t.ref, shadowed)}, ...]"
        if t.kind in (Kind.STRUCT, Kind.UNION):
            known = self.types[t.id]
            return known.name if known.has_class else "Any"
        raise GenError(f"{self.btf.type_name(type_id)} ({t.kind.name}) has no fixed layout a Python type could take")

    def _is_chars(self, type_id: int) -> bool:
        elem = self.btf.resolve(type_id)
        return elem.kind == Kind.INT and elem.size == 1 and elem.is_char

    def format(self, type_id: int) -> str:
        """The numpy format of a BTF type, as Python source: TypeCodec's dtype, written out."""
        t = self.btf.resolve(type_id)
        if t.kind == Kind.INT:
            if t.is_bool and t.size == 1:
                return '"?"'
            return f'"{"i" if t.signed else "u"}{t.size}"' if t.size in (1, 2, 4, 8) else f'"V{t.size}"'
        if t.kind in (Kind.ENUM, Kind.ENUM64):
            return f'"{"i" if t.signed else "u"}{t.size}"'
        if t.kind == Kind.PTR:
            return '"u8"'
        if t.kind == Kind.FLOAT:
            return f'"f{t.size}"'
        if t.kind == Kind.ARRAY:
            return f'"S{t.nelems}"' if self._is_chars(t.ref) else f"({self.format(t.ref)}, ({t.nelems},))"
        if t.kind in (Kind.STRUCT, Kind.UNION):
            return self.types[t.id].dtype
        raise GenError(f"{self.btf.type_name(type_id)} ({t.kind.name}) has no fixed layout a dtype could take")

    def dtype(self, type_id: int) -> str:
        """A dtype expression: a struct's constant, or np.dtype(format)."""
        t = self.btf.resolve(type_id)
        return self.types[t.id].dtype if t.kind in (Kind.STRUCT, Kind.UNION) else f"np.dtype({self.format(type_id)})"

    def map_class(self, name: str) -> str:
        spec = self.spec.maps[name]
        if not spec.key_size or not spec.value_size:
            return "Map"
        return "TypedPerCpuMap" if spec.type in _PER_CPU else "TypedMap"

    def struct_fields(self, t: _Type) -> list[tuple[str, int, int]]:
        """(name, type id, byte offset) of each field, as the dtype has them."""
        codec = self.btf.codec(t.type_id)
        assert codec.dtype.fields is not None
        return [(name, type_id, codec.dtype.fields[name][1]) for name, type_id in codec.fields().items()]

    def ordered_types(self) -> list[_Type]:
        """Enums by name, then structs by name with each after the structs it contains (its dtype
        refers to theirs)."""
        order: list[_Type] = sorted((t for t in self.types.values() if t.is_enum), key=lambda t: t.name)
        done: set[int] = set()

        def add(t: _Type) -> None:
            if t.type_id in done:
                return
            done.add(t.type_id)
            for _, type_id, _ in self.struct_fields(t):
                inner = self.btf.resolve(_element(self.btf, type_id))
                if inner.kind in (Kind.STRUCT, Kind.UNION):
                    add(self.types[inner.id])
            order.append(t)

        for t in sorted((t for t in self.types.values() if not t.is_enum), key=lambda t: t.name):
            add(t)
        return order


class _Writer:
    """Writes a model as the module (`stub` False) or its .pyi (True): one walk, so the two agree."""

    def __init__(self, model: _Model, *, stub: bool, source: str, sha256: str) -> None:
        self.m = model
        self.stub = stub
        self.source = source
        self.sha256 = sha256
        self.object_file = f"{_basename(Path(source))}.bpf.o"
        self.lines: list[str] = []
        self.imports: dict[str, set[str]] = {"pathlib": {"Path"}}
        self.exported: set[str] = {"OBJECT"}

    def use(self, module: str, *names: str) -> None:
        self.imports.setdefault(module, set()).update(names)

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def annotation(self, type_id: int, shadowed: frozenset[str]) -> str:
        annotation = self.m.annotation(type_id, shadowed)
        if "builtins." in annotation:
            self.use("builtins", "builtins")
        if re.search(r"\bAny\b", annotation):
            self.use("typing", "Any")
        return annotation

    def define(self, head: str, *body: str, doc: str = "") -> None:
        """A method: `...` in the stub, else its docstring and body (4 more spaces than `head`)."""
        indent = " " * (len(head) - len(head.lstrip()) + 4)
        if self.stub:
            self.add(f"{head} ...")
        else:
            self.add(head, *(self.docstring(indent, doc) if doc else []), *(f"{indent}{line}" for line in body))

    def call(self, indent: str, head: str, args: Sequence[str], tail: str) -> list[str]:
        """`head(args)tail` on one line if it fits, else one argument a line."""
        joined = ", ".join(args)
        if len(f"{indent}{head}({joined}{tail}") <= _WIDTH:
            return [f"{indent}{head}({joined}{tail}"]
        if len(f"{indent}    {joined}") <= _WIDTH:
            return [f"{indent}{head}(", f"{indent}    {joined}", f"{indent}{tail}"]
        return [f"{indent}{head}(", *(f"{indent}    {arg}," for arg in args), f"{indent}{tail}"]

    def class_head(self, name: str, bases: str, doc: str) -> None:
        self.exported.add(name)
        self.add("", "", f"class {name}{bases}:", *self.docstring("    ", doc))

    @staticmethod
    def docstring(indent: str, text: str) -> list[str]:
        lines = textwrap.wrap(f'"""{text}"""', _WIDTH - len(indent), break_on_hyphens=False)
        return [f"{indent}{line}" for line in lines]

    def render(self) -> str:
        self.types()
        if not self.stub:
            self.type_table()
        self.config()
        self.programs()
        self.map_specs()
        self.maps()
        self.rings()
        self.spec_class()
        self.object_class()
        m = self.m
        head = [
            f"{_MARKER} from {self.source}. DO NOT EDIT.",
            f"# {self.source} sha256 {self.sha256}.",
            *self.docstring("", f"Typed access to {self.object_file}, from its BTF: {m.cls}.load(), or "
                            f"{m.cls}.open() to configure first."),
            "",
        ]
        if not self.stub:
            head += ["from __future__ import annotations", ""]
        head += [*self.import_lines(), "", *self.listed("__all__ = [", sorted(self.exported), "]"), ""]
        if self.stub:
            head.append("OBJECT: Path")
        else:
            head.append(f'OBJECT = Path(__file__).with_name("{self.object_file}")  # compiled with this module')
        return "\n".join(head + self.lines) + "\n"

    @staticmethod
    def listed(head: str, names: list[str], tail: str) -> list[str]:
        """A list of strings on one line if it fits, else filled up to the line width."""
        items = [f'"{name}"' for name in names]
        line = f"{head}{', '.join(items)}{tail}"
        if len(line) <= _WIDTH:
            return [line]
        out, current = [head], "   "
        for item in items:
            if len(current) + len(item) + 2 > _WIDTH:
                out.append(current)
                current = "   "
            current += f" {item},"
        return [*out, current, tail]

    def import_lines(self) -> list[str]:
        """isort's order: standard library, then numpy and bpfscope; plain imports before from-imports."""
        plain_imports = {"builtins": "import builtins", "enum": "import enum", "os": "import os"}
        stdlib = sorted(plain_imports[module] for module in self.imports if module in plain_imports)
        stdlib += [self.from_import(module) for module in sorted(self.imports)
                   if module not in plain_imports and module != "numpy" and not module.startswith("bpfscope")]
        third_party = ["import numpy as np"] if "numpy" in self.imports else []
        third_party += [self.from_import(module) for module in sorted(self.imports) if module.startswith("bpfscope")]
        return [*stdlib, "", *third_party]

    def from_import(self, module: str) -> str:
        names = sorted(self.imports[module])
        line = f"from {module} import {', '.join(names)}"
        if len(line) <= _WIDTH:
            return line
        return "\n".join([f"from {module} import (", *(f"    {name}," for name in names), ")"])

    # --- types ---

    def types(self) -> None:
        for t in self.m.ordered_types():
            if t.is_enum:
                self.enum(t)
            else:
                self.struct(t)

    def enum(self, t: _Type) -> None:
        self.use("enum", "enum")
        self.class_head(t.name, "(enum.IntEnum)", f"{t.c_name}.")
        self.add("")
        members: set[str] = set()
        for name, value in self.m.btf.resolve(t.type_id).enumerators:
            # A leading underscore would make a private or reserved (_sunder_) Enum name.
            member = name.lstrip("_") or "VALUE"
            member = f"{member}_" if keyword.iskeyword(member) or member[0].isdigit() else member
            while member in members:
                member += "_"
            members.add(member)
            self.add(f"    {member} = {value}")

    def struct(self, t: _Type) -> None:
        resolved = self.m.btf.resolve(t.type_id)
        fields = self.m.struct_fields(t)
        note = "; its fields overlap" if resolved.kind == Kind.UNION else ""
        if any(member.bitfield_size or member.bit_offset % 8 for member in resolved.members):
            note += "; bitfields left out (numpy cannot address bits)"
        if t.has_class:
            self.use("dataclasses", "dataclass")
            shadowed = frozenset(name for name, _, _ in fields) & frozenset(_BUILTINS)
            self.exported.add(t.name)
            self.add("", "")
            if not self.stub:
                self.use("bpfscope.gen", "record")
                self.add("@record")
            self.add("@dataclass(frozen=True)", f"class {t.name}:",
                     *self.docstring("    ", f"{t.c_name}: {resolved.size} bytes{note}."))
            if fields:
                self.add("")
            self.add(*(f"    {name}: {self.annotation(type_id, shadowed)}" for name, type_id, _ in fields))
        self.exported.add(t.dtype)
        self.use("numpy", "np")
        if self.stub:
            self.add("", f"{t.dtype}: np.dtype[np.void]")
            return
        self.use("bpfscope.gen", "struct_dtype")
        self.add("", "")
        if not t.has_class:
            self.add(f"# {t.c_name}: a field name no dataclass can have, so its values are bpfscope's own records.")
        if not fields:
            self.add(f"{t.dtype} = struct_dtype({resolved.size}, [])")
            return
        self.add(f"{t.dtype} = struct_dtype({resolved.size}, [")
        self.add(*(f'    ("{name}", {self.m.format(type_id)}, {offset}),' for name, type_id, offset in fields))
        self.add("])")

    def type_table(self) -> None:
        self.use("typing", "Any")
        self.use("numpy", "np")
        entries = [f'    ({t.name}, "{t.path}", {"None" if t.is_enum else t.dtype}),'
                   for t in sorted(self.m.types.values(), key=lambda t: t.name) if t.has_class]
        self.add("", "", "# Each class, where bind() finds its BTF type, and the layout it was generated from.",
                 "_TYPES: tuple[tuple[Any, str, np.dtype[Any] | None], ...] = (", *entries, ")")

    # --- namespaces ---

    def config(self) -> None:
        m = self.m
        self.use("bpfscope.gen", "Knobs")
        self.class_head(f"{m.cls}Config", "(Knobs)",
                        "The const volatile globals (.rodata): set before load, constants to the verifier after.")
        shadowed = frozenset(m.knobs.values()) & frozenset(_BUILTINS)
        if m.knobs:
            self.add("")
        for name, attribute in m.knobs.items():
            annotation = self.annotation(m.knob_types[name], shadowed)
            if self.stub:
                self.add(f"    {attribute}: {annotation}")
            else:
                self.use("bpfscope.gen", "Knob")
                self.add(f'    {attribute}: Knob[{annotation}] = Knob("{name}")')

    def programs(self) -> None:
        m = self.m
        self.use("bpfscope.gen", "Members", "ProgramT")
        self.class_head(f"{m.cls}Programs", "(Members[ProgramT])",
                        "The programs: ProgramSpec before load (autoload), Program after (attach, test_run).")
        for name, attribute in m.programs.items():
            self.add("", "    @property")
            self.define(f"    def {attribute}(self) -> ProgramT:", f'return self._get("{name}")')

    def map_specs(self) -> None:
        m = self.m
        self.use("bpfscope.gen", "Members")
        self.use("bpfscope.object", "MapSpec")
        self.class_head(f"{m.cls}MapSpecs", "(Members[MapSpec])", "The maps before load: max_entries, pin_to.")
        for name, attribute in m.maps.items():
            self.add("", "    @property")
            self.define(f"    def {attribute}(self) -> MapSpec:", f'return self._get("{name}")')

    def map_side(self, name: str, role: str, shadowed: frozenset[str]) -> tuple[str, str]:
        """(annotation, dtype expression) of a map's key or value; by size where BTF has no type."""
        spec = self.m.spec.maps[name]
        codec = getattr(spec, role)
        if not self.stub:
            self.use("numpy", "np")
        if codec is not None:
            return self.annotation(codec.type_id, shadowed), self.m.dtype(codec.type_id)
        size = spec.key_size if role == "key" else spec.value_size
        name, fmt = ("int", f"u{size}") if size in (1, 2, 4, 8) else ("bytes", f"V{size}")
        if name in shadowed:
            self.use("builtins", "builtins")
            name = f"builtins.{name}"
        return name, f'np.dtype("{fmt}")'

    def maps(self) -> None:
        m = self.m
        self.use("bpfscope.object", "Object")
        self.class_head(f"{m.cls}Maps", "", "The maps: single values as this module's classes, whole maps as "
                        "numpy arrays of its dtypes.")
        shadowed = frozenset(m.maps.values()) & frozenset(_BUILTINS)
        members: list[tuple[str, str, list[str]]] = []  # attribute, annotation, constructor and its arguments
        for name, attribute in m.maps.items():
            cls = m.map_class(name)
            if cls == "Map":
                self.use("bpfscope.maps", "Map")
                members.append((attribute, "Map", []))
                continue
            self.use("bpfscope.gen", cls)
            (key, key_dtype), (value, value_dtype) = (self.map_side(name, role, shadowed) for role in ("key", "value"))
            members.append((attribute, f"{cls}[{key}, {value}]", [cls, "obj", f'"{name}"', key_dtype, value_dtype]))
        if self.stub:
            self.add("", *(f"    {attribute}: {annotation}" for attribute, annotation, _ in members))
            self.add("", "    def __init__(self, obj: Object) -> None: ...")
            return
        self.add("", "    def __init__(self, obj: Object) -> None:")
        for (attribute, annotation, call), name in zip(members, m.maps):
            if not call:
                self.add(f'        self.{attribute}: {annotation} = obj.maps["{name}"]')
            else:
                self.add(*self.call("        ", f"self.{attribute}: {annotation} = {call[0]}", call[1:], ")"))
        if not members:
            self.add("        pass")

    def rings(self) -> None:
        m = self.m
        self.use("bpfscope.gen", "Rings")
        self.class_head(f"{m.cls}Rings", "(Rings)",
                        "Ring buffer readers, made on first use, closed with the object; records are this module's.")
        shadowed = frozenset(m.rings.values()) & frozenset(_BUILTINS)
        for name, attribute in m.rings.items():
            self.use("bpfscope.gen", "TypedRingBuffer")
            record_type = m.ring_types[name]
            if not self.stub:
                self.use("numpy", "np")
            self.add("", "    @property")
            self.define(f"    def {attribute}(self) -> TypedRingBuffer[{self.annotation(record_type, shadowed)}]:",
                        f'return self._reader("{name}", {m.dtype(record_type)})')

    # --- the object ---

    def spec_class(self) -> None:
        m = self.m
        self.use("bpfscope.object", "ObjectSpec", "ProgramSpec")
        self.use("bpfscope.gen", "OpenedSpec")
        self.class_head(f"{m.cls}Spec", "(OpenedSpec)", f"{self.object_file} opened, nothing in the kernel yet: set "
                        "config, map sizes and autoload, then load().")
        if self.stub:
            self.add("", f"    config: {m.cls}Config", f"    programs: {m.cls}Programs[ProgramSpec]",
                     f"    maps: {m.cls}MapSpecs")
        self.add("")
        self.define("    def __init__(self, spec: ObjectSpec) -> None:",
                    "super().__init__(spec, _TYPES)", f"self.config = {m.cls}Config(spec.rodata)",
                    f'self.programs: {m.cls}Programs[ProgramSpec] = {m.cls}Programs(spec.programs, "program")',
                    f'self.maps = {m.cls}MapSpecs(spec.maps, "map")')
        self.add("")
        self.define(f"    def load(self) -> {m.cls}:", f"return {m.cls}(self.spec.load())",
                    doc="Loads the programs whose autoload is on and creates the maps; the spec is used up.")

    def object_class(self) -> None:
        m = self.m
        self.use("bpfscope.object", "Object", "ObjectSpec")
        self.use("bpfscope.program", "Program")
        self.use("bpfscope.gen", "LoadedObject")
        self.use("os", "os")
        self.class_head(m.cls, "(LoadedObject)", f"{self.object_file} loaded: its programs, maps and ring buffers by "
                        "name, typed. Close it (or use `with`) to release every fd.")
        if self.stub:
            self.add("", f"    config: {m.cls}Config", f"    programs: {m.cls}Programs[Program]",
                     f"    maps: {m.cls}Maps", f"    rings: {m.cls}Rings")
        self.add("")
        self.define("    def __init__(self, obj: Object) -> None:",
                    "self.object = obj", "try:", f"    self.config = {m.cls}Config(obj.rodata)",
                    f'    self.programs: {m.cls}Programs[Program] = {m.cls}Programs(obj.programs, "program")',
                    f"    self.maps = {m.cls}Maps(obj)", f"    self.rings = {m.cls}Rings(obj)",
                    "except BaseException:", "    obj.close()", "    raise")
        path = "path: str | os.PathLike[str] | None = None"
        self.add("", "    @staticmethod")
        self.define(f"    def open({path}, /) -> {m.cls}Spec:",
                    f"return {m.cls}Spec(ObjectSpec.open(OBJECT if path is None else path))",
                    doc="Parses the object (by default the one beside this module); nothing reaches the kernel yet.")
        shadowed = frozenset(m.knobs.values()) & frozenset(_BUILTINS)
        knobs = [f"{attribute}: {self.annotation(m.knob_types[name], shadowed)} | None = None"
                 for name, attribute in m.knobs.items()]
        signature = self.call("    ", "def load", [path, "/", *(["*", *knobs] if knobs else [])], f") -> {m.cls}:")
        self.add("", "    @staticmethod", *signature[:-1])
        body = [f"spec = {m.cls}.open(path)"]
        for attribute in m.knobs.values():
            body += [f"if {attribute} is not None:", f"    spec.config.{attribute} = {attribute}"]
        self.define(signature[-1], *body, "return spec.load()", doc="open(), then each knob given set, then load().")


def render(obj: Union[str, os.PathLike[str]], *, source: Union[str, os.PathLike[str]]) -> tuple[str, str]:
    """The module and its .pyi for a compiled object whose program is `source` (its name and sha256
    go in the header; everything else comes from the object)."""
    source_path = Path(source)
    sha256 = hashlib.sha256(source_path.read_bytes()).hexdigest()
    spec = ObjectSpec.open(obj)
    try:
        model = _Model(spec, _basename(source_path))
        module = _Writer(model, stub=False, source=source_path.name, sha256=sha256).render()
        stub = _Writer(model, stub=True, source=source_path.name, sha256=sha256).render()
    finally:
        spec.close()
    return module, stub


def _outputs(source: Path, output: Optional[Union[str, os.PathLike[str]]]) -> tuple[Path, Path]:
    """The module and its stub: `output`, by default <basename>.py beside the source."""
    module = Path(output) if output is not None else source.with_name(f"{_basename(source)}.py")
    if module.suffix != ".py":
        raise GenError(f"{module}: the module must be a .py file")
    return module, module.with_suffix(".pyi")


def generate(
    source: Union[str, os.PathLike[str]],
    output: Optional[Union[str, os.PathLike[str]]] = None,
    *,
    arch: Optional[str] = None,
    include_dirs: Iterable[Union[str, os.PathLike[str]]] = (),
) -> Path:
    """Compiles `source` into <basename>.bpf.o beside the module, then writes the module (by default
    <basename>.py beside the source) and its .pyi; returns the module's path. Overwrites only files
    that gen wrote (their first line says so)."""
    source_path = Path(source)
    module, stub = _outputs(source_path, output)
    for path in (module, stub):
        if path.exists() and not path.read_text(errors="replace").startswith(_MARKER):
            raise GenError(f"{path} exists and bpfscope gen did not write it; choose another with -o")
    target = module.with_name(f"{_basename(source_path)}.bpf.o")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bpfscope-gen-", dir=module.parent) as tmp:
        # Rendered before anything is replaced: a program gen refuses leaves the old object and module together.
        obj = compile_object(source_path, Path(tmp) / target.name, arch=arch, include_dirs=include_dirs)
        texts = render(obj, source=source_path)
        os.replace(obj, target)
    for path, text in zip((module, stub), texts):
        path.write_text(text, encoding="utf-8")
    return module


def stale(
    source: Union[str, os.PathLike[str]],
    output: Optional[Union[str, os.PathLike[str]]] = None,
    *,
    arch: Optional[str] = None,
    include_dirs: Iterable[Union[str, os.PathLike[str]]] = (),
) -> list[Path]:
    """The module and stub files that differ from what `generate` would write now (missing ones
    included): compiled in a temporary directory, so nothing beside the source changes."""
    source_path = Path(source)
    paths = _outputs(source_path, output)
    with tempfile.TemporaryDirectory(prefix="bpfscope-gen-") as tmp:
        obj = compile_object(source_path, Path(tmp) / f"{_basename(source_path)}.bpf.o", arch=arch,
                             include_dirs=include_dirs)
        texts = render(obj, source=source_path)
    return [path for path, text in zip(paths, texts) if not path.is_file() or path.read_bytes() != text.encode()]
