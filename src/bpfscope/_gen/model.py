"""One object as a generated module sees it: its types, maps, programs, rings and knobs, each with
the Python name the module gives it."""

from __future__ import annotations

import dataclasses
import errno
import keyword
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..btf import Btf, BtfType, Kind
from ..errors import BpfscopeError
from ..maps import MapType
from ..object import ObjectSpec
from ..typed import ROOT_KINDS, element_type

_PER_CPU = (MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH, MapType.PERCPU_ARRAY)
# Maps a module gives as bpfscope's own class: what their values are (programs, maps, perf events, a
# kernel struct's operations) is no type of the object's BTF.
_MAP_CLASSES = {MapType.PROG_ARRAY: "ProgramArray", MapType.ARRAY_OF_MAPS: "MapOfMaps",
                MapType.HASH_OF_MAPS: "MapOfMaps", MapType.PERF_EVENT_ARRAY: "Map", MapType.STRUCT_OPS: "Map"}
_BUFFERS = (MapType.RINGBUF, MapType.PERF_EVENT_ARRAY)
# Class names a generated module imports, which none of its own classes may take.
_IMPORTED = frozenset({"Any", "Knob", "Knobs", "LoadedObject", "Map", "MapOfMaps", "MapSpec", "Members", "Object",
                       "ObjectSpec", "OpenedSpec", "Path", "Program", "ProgramArray", "ProgramSpec", "ProgramT",
                       "Rings", "TypedMap", "TypedPerCpuMap", "TypedPerfBuffer", "TypedRingBuffer", "Variable",
                       "Variables"})
# What the module's own namespaces already use; a C name equal to one gets a trailing underscore.
# Knobs are also load()'s parameters, beside `path` and its local `spec`.
_RESERVED = {
    "config": frozenset({"_section", "path", "spec"}),
    "global": frozenset({"_section"}),
    "program": frozenset({"_get", "_members", "_what"}),
    "map": frozenset({"_get", "_members", "_what"}),
    "ring": frozenset({"close", "_object", "_reader", "_perf_reader", "_readers"}),
}
_EXPORT_PREFIX = "__btf_export_"
# gen's own BTF_EXPORT, for a type asked for with --type that only local variables have (see _gen.compile).
TYPE_ANCHOR = "__bpfscope_type_"
_TAGS = {"struct": (Kind.STRUCT,), "union": (Kind.UNION,), "enum": (Kind.ENUM, Kind.ENUM64), "typedef": (Kind.TYPEDEF,),
         "": (Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.ENUM64, Kind.TYPEDEF)}


def split_type_name(name: str) -> tuple[str, str]:
    """A --type NAME as (tag, name): "struct event" → ("struct", "event"), "event" → ("", "event")."""
    tag, _, bare = name.strip().rpartition(" ")
    if tag not in _TAGS or not bare.isidentifier():
        raise GenError(f"--type {name!r}: give a type's name, or struct, union, enum or typedef and its name")
    return tag, bare


def find_named_type(btf: Btf, name: str) -> BtfType | None:
    """The struct, union, enum or typedef `name` ("event", "struct event") of `btf`, defined in full."""
    tag, bare = split_type_name(name)
    return next((t for kind in _TAGS[tag] if (t := btf.find(bare, kind)) is not None), None)


class GenError(BpfscopeError):
    """The object has something a generated module cannot say, or the output is not gen's to overwrite."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EINVAL, message)


def _camel(name: str) -> str:
    text = "".join(word[:1].upper() + word[1:] for word in re.split(r"[^0-9A-Za-z]+", name) if word)
    return text if text and not text[0].isdigit() else f"C{text}"


def basename(source: Path) -> str:
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
class GenSection:
    """A data section whose global variables a module reads and writes after load (.bss, .data, .data.NAME)."""

    name: str  # ".data.custom"
    attribute: str  # the object's attribute: "data_custom", as a skeleton names it
    cls: str
    variables: dict[str, str]  # C name → attribute
    types: dict[str, int]  # C name → BTF type id


def _is_global_section(name: str) -> bool:
    return name in (".bss", ".data") or name.startswith(".data.")


@dataclasses.dataclass
class GenType:
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


class Model:
    """One object as a generated module sees it: its types, maps, programs, rings and knobs, with
    every Python name chosen."""

    def __init__(self, spec: ObjectSpec, base: str, *, extra_types: Sequence[str] = ()) -> None:
        self.btf: Btf = spec.btf
        self.spec = spec
        self.cls = _camel(base)
        if self.cls in _IMPORTED:
            raise GenError(f"{base!r} would name the module's class {self.cls}, a name the module imports; "
                           "rename the program")
        self.types: dict[int, GenType] = {}
        # libbpf's headers bring maps of their own (usdt.bpf.h's __bpf_usdt_specs): its machinery, not the program's.
        self.maps = _attributes((name for name in spec.maps if "." not in name and not name.startswith("__bpf_")),
                                "map")
        self.programs = _attributes(spec.programs, "program")
        section = self.btf.find(".rodata", Kind.DATASEC)
        # Globals only: a function's static locals (bpf_printk's format string) are named func.var here.
        self.knob_types = ({m.name: m.type_id for m in section.members if "." not in m.name}
                           if section is not None else {})
        self.knobs = _attributes(self.knob_types, "config")
        exports = {t.name.removeprefix(_EXPORT_PREFIX): self.btf.resolve(t.ref).ref
                   for t in self.btf if t.kind == Kind.VAR and t.name.startswith(_EXPORT_PREFIX)}
        self.rings = _attributes((name for name in self.maps if spec.maps[name].type in _BUFFERS
                                  and name in exports), "ring")
        self.ring_types = {name: exports[name] for name in self.rings}
        self.sections = self._sections()
        for name in self.maps:
            for role in ("key", "value"):
                codec = getattr(spec.maps[name], role)
                if codec is not None:
                    self._visit(codec.type_id, f"map {name}.{role}", f"{name}_{role}")
        for name in sorted(exports):
            self._visit(exports[name], f"export {name}", name)
        for name in sorted(self.knob_types):
            self._visit(self.knob_types[name], f"config {name}", f"{name}_type")
        for data in self.sections:
            for name in data.variables:
                self._visit(data.types[name], f"global {data.name} {name}", f"{name}_type")
        for name in extra_types:
            self._visit_named(name)
        self._name_types()

    def _sections(self) -> list[GenSection]:
        """The data sections with global variables of the program's own (not BTF_EXPORT's or gen's,
        nor a function's static locals, named func.var), by name."""
        sections = []
        for t in sorted((t for t in self.btf if t.kind == Kind.DATASEC and _is_global_section(t.name)),
                        key=lambda t: t.name):
            types = {m.name: m.type_id for m in t.members
                     if "." not in m.name and not m.name.startswith((_EXPORT_PREFIX, TYPE_ANCHOR))}
            if not types:
                continue
            attribute = re.sub(r"[^0-9A-Za-z]+", "_", t.name).strip("_")
            sections.append(GenSection(t.name, attribute, f"{self.cls}{_camel(attribute)}",
                                       _attributes(types, "global"), types))
        if len({section.attribute for section in sections}) < len(sections):
            raise GenError(f"two data sections would share a Python attribute: {', '.join(s.name for s in sections)}")
        return sections

    def _visit_named(self, name: str) -> None:
        """A type asked for by name (`--type`), as bpf2go's -type: a struct, union, enum or typedef of
        the object's BTF that no map, global or export reaches."""
        found = find_named_type(self.btf, name)
        if found is None:
            raise GenError(f"--type {name!r}: the program defines no such type (a struct, union or enum the "
                           "object's BTF could hold; a typedef only where BTF already has it)")
        if self.btf.resolve(found.id).kind not in (Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.ENUM64):
            raise GenError(f"--type {name!r}: not a struct, union or enum, so there is no class to make of it")
        self._visit(found.id, name, found.name)

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
        self.types[t.id] = GenType(t.id, path, hint, c_name, is_enum, has_class)
        for field, field_type in fields.items():
            self._visit(field_type, f"{path}.{field}", f"{hint}_{field}")

    def _name_types(self) -> None:
        taken = {self.cls + suffix for suffix in ("", "Spec", "Config", "Programs", "MapSpecs", "Maps", "Rings")}
        taken |= _IMPORTED | {"OBJECT"} | {section.cls for section in self.sections}

        def take(wanted: str) -> str:
            name, n = wanted, 2
            while name in taken:
                name, n = f"{wanted}{n}", n + 1
            taken.add(name)
            return name

        # Named types first, so an anonymous one never takes a name a named one wants.
        def anonymous(t: GenType) -> bool:
            return t.path.partition(" ")[0] not in ROOT_KINDS or "." in t.path

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
        if spec.type in _MAP_CLASSES:
            return _MAP_CLASSES[MapType(spec.type)]
        if not spec.key_size or not spec.value_size:
            return "Map"
        return "TypedPerCpuMap" if spec.type in _PER_CPU else "TypedMap"

    def struct_fields(self, t: GenType) -> list[tuple[str, int, int]]:
        """(name, type id, byte offset) of each field, as the dtype has them."""
        codec = self.btf.codec(t.type_id)
        assert codec.dtype.fields is not None
        return [(name, type_id, codec.dtype.fields[name][1]) for name, type_id in codec.fields().items()]

    def ordered_types(self) -> list[GenType]:
        """Enums by name, then structs by name with each after the structs it contains (its dtype
        refers to theirs)."""
        order: list[GenType] = sorted((t for t in self.types.values() if t.is_enum), key=lambda t: t.name)
        done: set[int] = set()

        def add(t: GenType) -> None:
            if t.type_id in done:
                return
            done.add(t.type_id)
            for _, type_id, _ in self.struct_fields(t):
                inner = self.btf.resolve(element_type(self.btf, type_id))
                if inner.kind in (Kind.STRUCT, Kind.UNION):
                    add(self.types[inner.id])
            order.append(t)

        for t in sorted((t for t in self.types.values() if not t.is_enum), key=lambda t: t.name):
            add(t)
        return order
