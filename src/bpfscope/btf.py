"""BTF, the kernel's type format, decoded into numpy dtypes and frozen dataclasses.

libbpf parses the object and hands over the raw BTF blob; this module reads that blob (no ctypes,
no root), so a map's key and value, a ring buffer's record and a .rodata section all get their
Python types from the program itself, never from a hand-copied struct."""

from __future__ import annotations

import dataclasses
import enum
import struct
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Iterator, Optional

import numpy as np

from .errors import TypeMismatchError

__all__ = ["Btf", "BtfType", "Kind", "MapDefinition", "TypeCodec"]

_MAGIC = 0xEB9F


class Kind(enum.IntEnum):
    """BTF_KIND_* from linux/btf.h."""

    UNKN = 0
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


_INT_SIGNED = 1 << 0
_INT_CHAR = 1 << 1
_INT_BOOL = 1 << 2
_MODIFIERS = (Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.TYPE_TAG)


@dataclass(frozen=True)
class Member:
    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int  # 0 for a whole-byte member


@dataclass(frozen=True)
class BtfType:
    """One decoded BTF type. `size` is in bytes where the kind has one; `ref` the referenced type id."""

    id: int
    kind: Kind
    name: str
    size: int = 0
    ref: int = 0
    signed: bool = False
    is_char: bool = False
    is_bool: bool = False
    bits: int = 0
    members: tuple[Member, ...] = ()
    enumerators: tuple[tuple[str, int], ...] = ()
    nelems: int = 0
    linkage: int = 0


@dataclass(frozen=True)
class MapDefinition:
    """A map as its BTF-defined declaration in SEC(".maps") says, the way libbpf reads it: `__uint(name, n)`
    members give numbers, `__type(key, T)` and `__type(value, T)` types (and their sizes), and
    `__array(values, struct inner)` the inner map of a map of maps (`inner`). Zero where not declared."""

    type: int = 0
    key_size: int = 0
    value_size: int = 0
    max_entries: int = 0
    map_flags: int = 0
    key_type_id: int = 0
    value_type_id: int = 0
    inner: Optional[MapDefinition] = None


class Btf:
    """A decoded BTF blob. Type ids start at 1; id 0 is void."""

    def __init__(self, raw: bytes) -> None:
        magic, _version, _flags, hdr_len = struct.unpack_from("=HBBI", raw, 0)
        if magic != _MAGIC:
            raise TypeMismatchError(f"not BTF data (magic {magic:#x})")
        type_off, type_len, str_off, str_len = struct.unpack_from("=IIII", raw, 8)
        self._strings = raw[hdr_len + str_off : hdr_len + str_off + str_len]
        self.types: list[Optional[BtfType]] = [None]
        self._by_name: dict[tuple[str, Kind], int] = {}
        self._classes: dict[int, Any] = {}
        # The id of the same BTF loaded into the kernel (by libbpf at load, or where a map's came from);
        # 0 while it is not there. Maps made from Python pass it on, so the kernel types them too.
        self.kernel_id = 0
        self._decode(raw[hdr_len + type_off : hdr_len + type_off + type_len])

    def _string(self, offset: int) -> str:
        end = self._strings.index(b"\0", offset)
        return self._strings[offset:end].decode()

    def _decode(self, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            name_off, info, size_or_type = struct.unpack_from("=III", data, pos)
            pos += 12
            kind = Kind((info >> 24) & 0x1F)
            vlen = info & 0xFFFF
            kflag = bool(info >> 31)
            type_id = len(self.types)
            name = self._string(name_off)
            fields: dict[str, Any] = {}
            if kind == Kind.INT:
                (bits,) = struct.unpack_from("=I", data, pos)
                pos += 4
                encoding = (bits >> 24) & 0xF
                fields = dict(
                    size=size_or_type,
                    bits=bits & 0xFF,
                    signed=bool(encoding & _INT_SIGNED),
                    is_char=bool(encoding & _INT_CHAR) or name == "char",
                    is_bool=bool(encoding & _INT_BOOL),
                )
            elif kind == Kind.ARRAY:
                elem, _index, nelems = struct.unpack_from("=III", data, pos)
                pos += 12
                fields = dict(ref=elem, nelems=nelems)
            elif kind in (Kind.STRUCT, Kind.UNION):
                members = []
                for _ in range(vlen):
                    m_name, m_type, m_off = struct.unpack_from("=III", data, pos)
                    pos += 12
                    bit_off, bf_size = (m_off & 0xFFFFFF, m_off >> 24) if kflag else (m_off, 0)
                    members.append(Member(self._string(m_name), m_type, bit_off, bf_size))
                fields = dict(size=size_or_type, members=tuple(members))
            elif kind == Kind.ENUM:
                values = []
                for _ in range(vlen):
                    e_name, e_val = struct.unpack_from("=Ii" if kflag else "=II", data, pos)
                    pos += 8
                    values.append((self._string(e_name), e_val))
                fields = dict(size=size_or_type, enumerators=tuple(values), signed=kflag)
            elif kind == Kind.ENUM64:
                values = []
                for _ in range(vlen):
                    e_name, lo, hi = struct.unpack_from("=III", data, pos)
                    pos += 12
                    value = (hi << 32) | lo
                    if kflag and value >= 1 << 63:
                        value -= 1 << 64
                    values.append((self._string(e_name), value))
                fields = dict(size=size_or_type, enumerators=tuple(values), signed=kflag)
            elif kind == Kind.FUNC_PROTO:
                pos += 8 * vlen
                fields = dict(ref=size_or_type)
            elif kind == Kind.VAR:
                (linkage,) = struct.unpack_from("=I", data, pos)
                pos += 4
                fields = dict(ref=size_or_type, linkage=linkage)
            elif kind == Kind.DATASEC:
                members = []
                for _ in range(vlen):
                    v_type, v_off, _v_size = struct.unpack_from("=III", data, pos)
                    pos += 12
                    members.append(Member("", v_type, v_off * 8, 0))
                fields = dict(size=size_or_type, members=tuple(members))
            elif kind == Kind.DECL_TAG:
                pos += 4
                fields = dict(ref=size_or_type)
            elif kind == Kind.FLOAT:
                fields = dict(size=size_or_type)
            else:  # PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, TYPE_TAG
                fields = dict(ref=size_or_type)
            self.types.append(BtfType(type_id, kind, name, **fields))
            if name:
                self._by_name.setdefault((name, kind), type_id)
        # DATASEC members are VARs: name them after the variable.
        for i, t in enumerate(self.types):
            if t is not None and t.kind == Kind.DATASEC:
                named = tuple(
                    Member(self[m.type_id].name, self[m.type_id].ref, m.bit_offset, 0) for m in t.members
                )
                self.types[i] = dataclasses.replace(t, members=named)

    def __getitem__(self, type_id: int) -> BtfType:
        t = self.types[type_id] if 0 < type_id < len(self.types) else None
        if t is None:
            raise TypeMismatchError(f"no BTF type with id {type_id}")
        return t

    def __iter__(self) -> Iterator[BtfType]:
        return (t for t in self.types if t is not None)

    def find(self, name: str, kind: Kind) -> Optional[BtfType]:
        type_id = self._by_name.get((name, kind))
        return self[type_id] if type_id else None

    def struct(self, name: str) -> TypeCodec:
        """The codec of `struct name`, `union name` or a typedef of one: a type named the way the
        program's C names it, such as a ring buffer's record."""
        for kind in (Kind.STRUCT, Kind.UNION, Kind.TYPEDEF):
            found = self.find(name, kind)
            if found is not None and self.resolve(found.id).kind in (Kind.STRUCT, Kind.UNION):
                return self.codec(found.id)
        raise TypeMismatchError(f"no struct, union or typedef of one named {name!r} in the BTF (clang writes BTF "
                                "for the types of maps, globals and functions, not of local variables)")

    def map_definition(self, name: str) -> Optional[MapDefinition]:
        """The declaration of map `name` in the .maps section; None if the BTF has none (a map libbpf
        made itself, such as .bss, or a name the kernel cut to 15 characters)."""
        section = self.find(".maps", Kind.DATASEC)
        member = next((m for m in section.members if m.name == name), None) if section is not None else None
        if member is None:
            return None
        return self._map_definition(self.resolve(member.type_id))

    def _map_definition(self, declaration: BtfType) -> MapDefinition:
        numbers: dict[str, int] = {}
        types: dict[str, int] = {}
        inner: Optional[MapDefinition] = None
        for member in declaration.members:
            t = self[member.type_id]
            if t.kind == Kind.PTR and self[t.ref].kind == Kind.ARRAY:  # __uint: int (*name)[n]
                numbers[member.name] = self[t.ref].nelems
            elif t.kind == Kind.PTR:  # __type: T *name
                types[member.name] = t.ref
            elif member.name == "values" and t.kind == Kind.ARRAY:  # __array: T *values[]
                pointee = self.resolve(self[t.ref].ref)
                if pointee.kind == Kind.STRUCT:  # a map's declaration, not a program's prototype
                    inner = self._map_definition(pointee)
        key, value = types.get("key", 0), types.get("value", 0)
        return MapDefinition(
            type=numbers.get("type", 0),
            key_size=self.size_of(key) if key else numbers.get("key_size", 0),
            value_size=self.size_of(value) if value else numbers.get("value_size", 0),
            max_entries=numbers.get("max_entries", 0),
            map_flags=numbers.get("map_flags", 0),
            key_type_id=key,
            value_type_id=value,
            inner=inner,
        )

    def resolve(self, type_id: int) -> BtfType:
        """Follows typedefs and qualifiers to the type that has a layout."""
        t = self[type_id]
        while t.kind in _MODIFIERS:
            t = self[t.ref]
        return t

    def size_of(self, type_id: int) -> int:
        t = self.resolve(type_id)
        if t.kind == Kind.ARRAY:
            return t.nelems * self.size_of(t.ref)
        if t.kind == Kind.PTR:
            return 8
        return t.size

    def type_name(self, type_id: int) -> str:
        """C spelling of a type, for messages: `struct flow_key`, `__u32`, `char[16]`."""
        if type_id == 0:
            return "void"
        t = self[type_id]
        prefix = {Kind.STRUCT: "struct ", Kind.UNION: "union ", Kind.ENUM: "enum ", Kind.ENUM64: "enum "}
        if t.kind == Kind.ARRAY:
            return f"{self.type_name(t.ref)}[{t.nelems}]"
        if t.kind == Kind.PTR:
            return f"{self.type_name(t.ref)} *"
        if t.kind in (Kind.CONST, Kind.VOLATILE, Kind.RESTRICT, Kind.TYPE_TAG):
            return self.type_name(t.ref)
        return prefix.get(t.kind, "") + (t.name or "(anon)")

    def codec(self, type_id: int) -> TypeCodec:
        """The numpy dtype and Python conversions of a type."""
        return TypeCodec(self, type_id)

    def use_class(self, type_id: int, cls: Any) -> None:
        """Makes single values of this struct, union or enum into `cls` (a dataclass taking the fields
        as keywords, an IntEnum) instead of the class bpfscope would make: a module written by
        `bpfscope gen` binds its own classes this way, before any value is converted."""
        self._classes[self.resolve(type_id).id] = cls


def frozen_record(name: str, fields: list[str]) -> type:
    """A frozen dataclass whose __init__ fills the instance __dict__ directly. The generated one
    sets each field through object.__setattr__, which costs twice as much, and a ring buffer
    reader builds millions of these a second. Still frozen, hashable, and a dataclass."""
    cls = dataclasses.make_dataclass(name, [(f, Any) for f in fields], frozen=True, init=False)
    this, store = "self", "fields"
    while this in fields:  # a C struct may well have a field named `self` or `fields`
        this += "_"
    while store in fields or store == this:
        store += "_"
    lines = [f"def __init__({', '.join([this, *fields])}):", f"    {store} = {this}.__dict__"]
    lines += [f"    {store}[{f!r}] = {f}" for f in fields] or ["    pass"]
    namespace: dict[str, Any] = {}
    exec("\n".join(lines), namespace)  # noqa: S102 - names are C identifiers from BTF, as dataclasses does
    init = namespace["__init__"]
    init.__qualname__ = f"{name}.__init__"
    cls.__init__ = init  # type: ignore[misc]
    return cls


class TypeCodec:
    """One BTF type as a numpy dtype (for batches) and as plain Python values (for one lookup):
    scalars are int, char[N] is bytes, enums are IntEnum, structs are frozen dataclasses."""

    def __init__(self, btf: Btf, type_id: int) -> None:
        self.btf = btf
        self.type_id = type_id
        self.name = btf.type_name(type_id)
        self.dtype = self._dtype(type_id)

    # --- dtype ---

    def _dtype(self, type_id: int) -> np.dtype[Any]:
        btf = self.btf
        t = btf.resolve(type_id)
        if t.kind == Kind.INT:
            if t.is_bool and t.size == 1:
                return np.dtype("?")
            if t.size not in (1, 2, 4, 8):
                return np.dtype(f"V{t.size}")
            return np.dtype(f"{'i' if t.signed else 'u'}{t.size}")
        if t.kind in (Kind.ENUM, Kind.ENUM64):
            return np.dtype(f"{'i' if t.signed else 'u'}{t.size}")
        if t.kind == Kind.PTR:
            return np.dtype("u8")
        if t.kind == Kind.FLOAT:
            return np.dtype(f"f{t.size}")
        if t.kind == Kind.ARRAY:
            elem = btf.resolve(t.ref)
            if elem.kind == Kind.INT and elem.size == 1 and elem.is_char:
                return np.dtype(f"S{t.nelems}")
            return np.dtype((self._dtype(t.ref), (t.nelems,)))
        if t.kind in (Kind.STRUCT, Kind.UNION, Kind.DATASEC):
            names, formats, offsets = [], [], []
            for name, member_type, offset in self._fields(t):
                names.append(name)
                formats.append(self._dtype(member_type))
                offsets.append(offset)
            return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": t.size})
        raise TypeMismatchError(f"BTF type {btf.type_name(type_id)} ({t.kind.name}) has no fixed layout")

    def fields(self) -> dict[str, int]:
        """Field name → BTF type id of a struct or union (anonymous members flattened, as the dtype
        has them); {} for any other type."""
        t = self.btf.resolve(self.type_id)
        if t.kind not in (Kind.STRUCT, Kind.UNION):
            return {}
        return {name: type_id for name, type_id, _ in self._fields(t)}

    def _fields(self, t: BtfType, base: int = 0) -> Iterator[tuple[str, int, int]]:
        """(name, type id, byte offset) of each member; anonymous structs and unions are flattened
        as C does, bitfields are left out (numpy cannot address bits)."""
        for m in t.members:
            if m.bitfield_size or m.bit_offset % 8:
                continue
            offset = base + m.bit_offset // 8
            inner = self.btf.resolve(m.type_id)
            if not m.name and inner.kind in (Kind.STRUCT, Kind.UNION):
                yield from self._fields(inner, offset)
            else:
                yield m.name, m.type_id, offset

    # --- Python values ---

    @cached_property
    def python_type(self) -> Any:
        """The class a single value becomes: a frozen dataclass for a struct, IntEnum for an enum;
        the same class to_python() builds, so isinstance and equality hold."""
        return self._class_for(self.type_id)

    def _python_type(self, type_id: int) -> Any:
        t = self.btf.resolve(type_id)
        if t.kind in (Kind.ENUM, Kind.ENUM64) and t.name and t.enumerators:
            return enum.IntEnum(t.name, dict(t.enumerators))
        if t.kind in (Kind.STRUCT, Kind.UNION, Kind.DATASEC):
            return frozen_record(t.name.lstrip(".") or "anon", [name for name, _, _ in self._fields(t)])
        return None

    def to_python(self, raw: Any) -> Any:
        """A numpy scalar or record of this type as plain Python values."""
        return self._convert(self.type_id, raw)

    def _convert(self, type_id: int, raw: Any) -> Any:
        t = self.btf.resolve(type_id)
        if t.kind in (Kind.STRUCT, Kind.UNION, Kind.DATASEC):
            cls = self._class_for(type_id)
            values = {name: self._convert(mt, raw[name]) for name, mt, _ in self._fields(t)}
            return cls(**values)
        if t.kind == Kind.ARRAY:
            if isinstance(raw, bytes):
                return bytes(raw)  # np.bytes_ → bytes
            return tuple(self._convert(t.ref, item) for item in raw)
        if t.kind in (Kind.ENUM, Kind.ENUM64):
            cls = self._class_for(type_id)
            try:
                return cls(int(raw)) if cls else int(raw)
            except ValueError:
                return int(raw)  # a value the enum does not name
        if t.kind == Kind.FLOAT:
            return float(raw)
        if isinstance(raw, np.bool_):
            return bool(raw)
        if isinstance(raw, np.void):
            return raw.tobytes()
        return int(raw)

    @cached_property
    def _classes(self) -> dict[int, Any]:
        return {}

    def _class_for(self, type_id: int) -> Any:
        t = self.btf.resolve(type_id)
        if t.id not in self._classes:
            bound = self.btf._classes.get(t.id)
            self._classes[t.id] = bound if bound is not None else self._python_type(t.id)
        return self._classes[t.id]

    def to_bytes(self, value: Any) -> bytes:
        """Encodes an int, bytes, mapping, tuple, dataclass or numpy record of this type."""
        return self.to_array([value]).tobytes()

    def to_array(self, values: Any) -> np.ndarray[Any, Any]:
        """Encodes a sequence of values (or an array already of this dtype) as an array of this dtype."""
        if isinstance(values, np.ndarray) and values.dtype == self.dtype:
            return values
        out = np.zeros(len(values), dtype=self.dtype)
        for i, value in enumerate(values):
            try:
                out[i] = self._numpy_value(value)
            except (TypeError, ValueError, OverflowError, KeyError) as exc:
                raise TypeMismatchError(f"{value!r} does not fit {self.name}: {exc}") from None
        return out

    def _numpy_value(self, value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        if isinstance(value, dict):
            if self.dtype.names is None:
                raise TypeMismatchError(f"{self.name} is not a struct")
            missing = set(value) - set(self.dtype.names)
            if missing:
                raise TypeMismatchError(f"{self.name} has no field {sorted(missing)[0]!r}")
            return tuple(value.get(name, 0) for name in self.dtype.names)
        if isinstance(value, bytes) and self.dtype.kind == "V" and len(value) == self.dtype.itemsize:
            return np.frombuffer(value, dtype=self.dtype)[0]
        return value


class RawCodec:
    """A key or value the object has no BTF for: an unsigned int of its size, or raw bytes."""

    def __init__(self, size: int) -> None:
        self.name = f"{size}-byte value without BTF"
        self.dtype: np.dtype[Any] = np.dtype(f"u{size}") if size in (1, 2, 4, 8) else np.dtype(f"V{size}")
        self.python_type = None

    def to_python(self, raw: Any) -> Any:
        return raw.tobytes() if isinstance(raw, np.void) else int(raw)

    def to_bytes(self, value: Any) -> bytes:
        return self.to_array([value]).tobytes()

    def to_array(self, values: Any) -> np.ndarray[Any, Any]:
        if isinstance(values, np.ndarray) and values.dtype == self.dtype:
            return values
        try:
            if self.dtype.kind == "V":
                return np.frombuffer(b"".join(bytes(v) for v in values), dtype=self.dtype)
            return np.array(values, dtype=self.dtype)
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeMismatchError(f"{values!r} does not fit a {self.name}: {exc}") from None
