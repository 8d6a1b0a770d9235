"""What a module written by `bpfscope gen` imports at run time: typed maps, ring and perf buffers,
knobs and global variables, namespaces of programs and maps, and `bind`, which makes bpfscope decode
values into the module's own classes. Written and tested once here instead of once per module; the
generator is bpfscope._gen."""

from __future__ import annotations

import dataclasses
import errno
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Generic, Optional, Protocol, TypeVar, Union, cast, overload

import numpy as np

from .btf import Btf, Kind, TypeCodec, frozen_record
from .errors import BpfscopeError, TypeMismatchError
from .maps import Map, PerCpuHashMap, UpdateFlags
from .object import Object, ObjectSpec, ProgramSpec
from .perfbuf import PerfBuffer
from .program import Program
from .ringbuf import RingBuffer

__all__ = [
    "Knob", "Knobs", "LoadedObject", "Members", "OpenedSpec", "ProgramT", "Rings", "TypedMap", "TypedPerCpuMap",
    "TypedPerfBuffer", "TypedRingBuffer", "Variable", "Variables", "bind", "map_as", "plain", "record", "struct_dtype",
]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")
R = TypeVar("R")
ProgramT = TypeVar("ProgramT", ProgramSpec, Program)
_Ring = TypeVar("_Ring", bound="TypedRingBuffer[Any]")
_MapT = TypeVar("_MapT", bound=Map)
_Perf = TypeVar("_Perf", bound="TypedPerfBuffer[Any]")
_Array = np.ndarray[Any, np.dtype[Any]]

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


# The first word of a path to a named type (see _find_type); the generator writes these paths.
ROOT_KINDS = {"struct": Kind.STRUCT, "union": Kind.UNION, "enum": Kind.ENUM, "enum64": Kind.ENUM64,
              "typedef": Kind.TYPEDEF}


def _stale(what: str) -> TypeMismatchError:
    return TypeMismatchError(f"{what}: the object differs from the one the module was generated from; "
                             "run bpfscope gen again")


def _find_type(spec: ObjectSpec, path: str) -> int:
    """The BTF type id at `path`: a root (`struct NAME`, `typedef NAME`, `map NAME.key`, `export
    NAME`, `config NAME`, `global SECTION NAME`), then member names; arrays stand for their elements.
    0 if not there."""
    btf = spec.btf
    root, _, rest = path.partition(" ")
    section_name = ".rodata"
    if root == "global":
        section_name, _, rest = rest.partition(" ")
    name, *members = rest.split(".")
    type_id = 0
    if root == "map":
        map_spec = spec.maps.get(name)
        codec = getattr(map_spec, members.pop(0)) if map_spec is not None else None
        type_id = codec.type_id if codec is not None else 0
    elif root == "export":
        var = btf.find(f"__btf_export_{name}", Kind.VAR)
        type_id = btf.resolve(var.ref).ref if var is not None else 0
    elif root in ("config", "global"):
        section = btf.find(section_name, Kind.DATASEC)
        type_id = next((m.type_id for m in section.members if m.name == name), 0) if section is not None else 0
    elif root in ROOT_KINDS:
        found = btf.find(name, ROOT_KINDS[root])
        type_id = found.id if found is not None else 0
    type_id = element_type(btf, type_id)
    for member in members:
        type_id = element_type(btf, btf.codec(type_id).fields().get(member, 0)) if type_id else 0
    return type_id


def element_type(btf: Btf, type_id: int) -> int:
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


def map_as(obj: Object, name: str, cls: type[_MapT]) -> _MapT:
    """obj.maps[name] as the class its map type makes it (ProgramArray, MapOfMaps), checked."""
    found = obj.maps[name]
    if not isinstance(found, cls):
        raise _stale(f"map {name!r} is a {type(found).__name__}, not a {cls.__name__}")
    return found


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

    def __init__(self, ring: Map, *, record: TypeCodec, lost: Optional[Map], dtype: np.dtype[Any]) -> None:
        self.closed = False
        if record.dtype != dtype:
            raise _stale(f"ring buffer {ring.name!r}: its record {record.name} has another layout")
        super().__init__(ring, record=record, lost=lost)

    def records(self, timeout_ms: int = 100) -> Iterator[R]:
        return cast("Iterator[R]", super().records(timeout_ms))

    def __iter__(self) -> Iterator[R]:
        return self.records()

    def __enter__(self: _Ring) -> _Ring:
        return self

    def close(self) -> None:
        self.closed = True
        super().close()


class TypedPerfBuffer(PerfBuffer, Generic[R]):
    """A PerfBuffer whose records are the generated module's class (and its dtype, checked)."""

    def __init__(self, events: Map, *, record: TypeCodec, dtype: np.dtype[Any]) -> None:
        self.closed = False
        if record.dtype != dtype:
            raise _stale(f"perf buffer {events.name!r}: its record {record.name} has another layout")
        super().__init__(events, record=record)

    def records(self, timeout_ms: int = 100) -> Iterator[R]:
        return cast("Iterator[R]", super().records(timeout_ms))

    def __iter__(self) -> Iterator[R]:
        return self.records()

    def __enter__(self: _Perf) -> _Perf:
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


class Section(Protocol):
    """Global variables by name: an object's Config (.rodata, before load) or Globals (after load)."""

    def __getitem__(self, name: str, /) -> Any: ...

    def __setitem__(self, name: str, value: Any, /) -> None: ...


class Variables:
    """Base of a generated namespace of global variables: its Variable attributes read and write one
    section of the object (.bss, .data, .data.NAME while the programs run)."""

    def __init__(self, section: Section) -> None:
        self._section = section


class Variable(Generic[T]):
    """One global variable as a typed attribute of a Variables namespace."""

    def __init__(self, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: Any) -> Variable[T]: ...

    @overload
    def __get__(self, instance: Variables, owner: Any) -> T: ...

    def __get__(self, instance: Optional[Variables], owner: Any) -> Union[Variable[T], T]:
        if instance is None:
            return self
        return cast(T, instance._section[self.name])

    def __set__(self, instance: Variables, value: T) -> None:
        instance._section[self.name] = plain(value)


class Knobs(Variables):
    """Base of a generated Config: its Knob attributes read and write the object's .rodata."""


class Knob(Variable[T]):
    """One `const volatile` global as a typed attribute: settable until the object loads."""


class Rings:
    """Base of a generated namespace of ring and perf buffer readers: each made on first use (again
    after the caller closed it, as `with obj.rings.events as events:` does), all closed with the object.
    A perf buffer's samples reach it only once its reader is open: open it before the programs run."""

    def __init__(self, obj: Object) -> None:
        self._object = obj
        self._readers: dict[str, Union[TypedRingBuffer[Any], TypedPerfBuffer[Any]]] = {}

    def _reader(self, name: str, dtype: np.dtype[Any]) -> TypedRingBuffer[Any]:
        reader = self._readers.get(name)
        if not isinstance(reader, TypedRingBuffer) or reader.closed:
            obj = self._object  # the look-ups of Object.ring_buffer, for a ring of DEFINE_RINGBUF
            reader = self._readers[name] = TypedRingBuffer(
                obj.maps[name], record=obj.exported_type(name), lost=obj.maps.get(f"{name}_lost"), dtype=dtype)
        return reader

    def _perf_reader(self, name: str, dtype: np.dtype[Any]) -> TypedPerfBuffer[Any]:
        reader = self._readers.get(name)
        if not isinstance(reader, TypedPerfBuffer) or reader.closed:
            obj = self._object  # Object.perf_buffer's look-up, for the type BTF_EXPORT names after the map
            reader = self._readers[name] = TypedPerfBuffer(obj.maps[name], record=obj.exported_type(name),
                                                           dtype=dtype)
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
