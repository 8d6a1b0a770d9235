"""ObjectSpec (a parsed .bpf.o: configurable, nothing in the kernel yet) → Object (loaded: owns
its programs, maps and their fds). Configuration is written between the two: `const volatile`
globals through `spec.rodata`, map sizes through `spec.maps[name].max_entries`."""

from __future__ import annotations

import ctypes
import errno
import os
import re
from pathlib import Path
from types import TracebackType
from typing import Any, Iterable, Iterator, Mapping, Optional, Union

import numpy as np

from . import _libbpf
from ._arch import machine
from ._attach import auto, struct_ops, tracing
from ._privileges import Capability, load_needs
from .btf import Btf, Kind, TypeCodec
from .errors import BpfscopeError, SyscallError, VerifierError
from .globals import Globals, section_map
from .link import Link, LinkGroup
from .maps import Map, MapType
from .perfbuf import PerfBuffer
from .pin import ensure_pin_dir
from .program import Program
from .ringbuf import Record, RingBuffer

__all__ = ["ObjectSpec", "Object", "MapSpec", "ProgramSpec", "Config", "tool_object"]

_PACKAGE_OBJECTS = Path(__file__).parent / "_bpf"
_LOG_SECTION = re.compile(r"prog '([^']+)': -- BEGIN PROG LOAD LOG --\n(.*?)-- END PROG LOAD LOG --", re.S)
_LOAD_FAILED = re.compile(r"prog '([^']+)': (?:BPF program load failed|failed to load)")


def tool_object(name: str) -> Path:
    """The compiled object a tool ships in the package, for this machine's architecture."""
    arch = machine()
    path = _PACKAGE_OBJECTS / arch / f"{name}.bpf.o"
    if not path.is_file():
        raise BpfscopeError(
            errno.ENOENT,
            f"no BPF object {name!r} for {arch} in the package (looked for {path}); "
            "build it with `make bpf`",
        )
    return path


class MapSpec:
    """A map before load: typed from BTF already (`key`, `value`), its size can still change."""

    def __init__(self, ptr: int, btf: Btf) -> None:
        self._ptr = ptr
        self.name: str = _libbpf.bpf_map__name(ptr).decode()
        key_id, value_id = _libbpf.bpf_map__btf_key_type_id(ptr), _libbpf.bpf_map__btf_value_type_id(ptr)
        self.key: Optional[TypeCodec] = btf.codec(key_id) if key_id else None
        self.value: Optional[TypeCodec] = btf.codec(value_id) if value_id else None

    @property
    def type(self) -> int:
        """BPF_MAP_TYPE_*, as maps.MapType has them."""
        return int(_libbpf.bpf_map__type(self._ptr))

    @property
    def key_size(self) -> int:
        """Bytes of a key, whether or not BTF types it."""
        return int(_libbpf.bpf_map__key_size(self._ptr))

    @property
    def value_size(self) -> int:
        """Bytes of a value, whether or not BTF types it."""
        return int(_libbpf.bpf_map__value_size(self._ptr))

    @property
    def max_entries(self) -> int:
        return int(_libbpf.bpf_map__max_entries(self._ptr))

    @max_entries.setter
    def max_entries(self, value: int) -> None:
        _libbpf.check(_libbpf.bpf_map__set_max_entries(self._ptr, value), f"resize map {self.name!r}")

    def pin_to(self, path: str) -> bool:
        """Keeps the map's contents past this process: at load, libbpf takes over the map pinned at
        `path` (by an earlier run) or creates the map and pins it there. A pin that no longer fits
        (its type, sizes or flags differ, as after an upgrade) is removed first, so the load starts
        afresh; returns whether an earlier pin was taken over."""
        ensure_pin_dir(path)
        kept = os.path.exists(path) and self._pin_fits(path)
        if os.path.exists(path) and not kept:
            os.unlink(path)
        _libbpf.check(_libbpf.bpf_map__set_pin_path(self._ptr, path.encode()), f"pin map {self.name!r} at {path}")
        return kept

    def _pin_fits(self, path: str) -> bool:
        fd = _libbpf.bpf_obj_get(path.encode())
        if fd < 0:
            return False
        try:
            info = _libbpf.BpfMapInfo()
            size = ctypes.c_uint32(ctypes.sizeof(info))
            if _libbpf.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)) < 0:
                return False
        finally:
            os.close(fd)
        ptr = self._ptr
        return (info.type, info.key_size, info.value_size, info.max_entries, info.map_flags) == (
            _libbpf.bpf_map__type(ptr), _libbpf.bpf_map__key_size(ptr), _libbpf.bpf_map__value_size(ptr),
            _libbpf.bpf_map__max_entries(ptr), _libbpf.bpf_map__map_flags(ptr))


class ProgramSpec:
    """A program before load: `autoload = False` leaves it out (a hook this kernel lacks)."""

    def __init__(self, ptr: int) -> None:
        self._ptr = ptr
        self.name: str = _libbpf.bpf_program__name(ptr).decode()
        self.section: str = _libbpf.bpf_program__section_name(ptr).decode()

    @property
    def autoload(self) -> bool:
        return bool(_libbpf.bpf_program__autoload(self._ptr))

    @autoload.setter
    def autoload(self, value: bool) -> None:
        _libbpf.check(_libbpf.bpf_program__set_autoload(self._ptr, value), f"set autoload of {self.name!r}")

    def set_attach_target(self, function: str, *, program: Optional[Program] = None) -> None:
        """Points an fentry, fexit, fmod_ret or freplace program at `function`: of the kernel, or a global
        function of the loaded BPF program `program` (which freplace needs), instead of its section's."""
        tracing.set_attach_target(self._ptr, self.name, function, program)


class Config(Mapping[str, Any]):
    """The `const volatile` globals of .rodata, typed by BTF; writable until the object loads."""

    def __init__(self, array: Optional[np.ndarray[Any, Any]], codec: Optional[TypeCodec]) -> None:
        self._array = array
        self._codec = codec
        self.frozen = False

    def _fields(self) -> tuple[str, ...]:
        return () if self._array is None else tuple(self._array.dtype.names or ())

    def __getitem__(self, name: str) -> Any:
        if name not in self._fields():
            raise KeyError(name)
        assert self._array is not None and self._codec is not None
        raw = self._array[0][name]
        field_type = next(m.type_id for m in self._codec.btf.resolve(self._codec.type_id).members if m.name == name)
        return self._codec.btf.codec(field_type).to_python(raw)

    def __setitem__(self, name: str, value: Any) -> None:
        if self.frozen:
            raise BpfscopeError(errno.EROFS, f"cannot set {name!r}: the object is loaded, .rodata is frozen")
        if name not in self._fields():
            known = ", ".join(self._fields()) or "none"
            raise KeyError(f"no const volatile global {name!r} (the object has: {known})")
        assert self._array is not None
        try:
            self._array[0][name] = value
        except (TypeError, ValueError, OverflowError) as exc:
            raise BpfscopeError(errno.EINVAL, f"{name} = {value!r}: {exc}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields())

    def __len__(self) -> int:
        return len(self._fields())


class _Owner:
    """Owns the libbpf `struct bpf_object *`; closed once, by whichever holder closes last."""

    def __init__(self, ptr: int, path: str) -> None:
        self.ptr = ptr
        self.path = path

    def close(self) -> None:
        ptr, self.ptr = self.ptr, 0
        if ptr:
            _libbpf.bpf_object__close(ptr)

    def __del__(self) -> None:
        self.close()


def _walk(next_fn: Any, obj_ptr: int) -> Iterator[int]:
    item = next_fn(obj_ptr, None)
    while item:
        yield item
        item = next_fn(obj_ptr, item)


class ObjectSpec:
    """An opened .bpf.o. Configure, then `load()`; or `close()` to drop it."""

    def __init__(self, owner: _Owner) -> None:
        self._owner = owner
        self.name: str = _libbpf.bpf_object__name(owner.ptr).decode()
        self.btf = Btf(_libbpf.raw_btf(_libbpf.check_ptr(_libbpf.bpf_object__btf(owner.ptr), "read BTF")))
        self.programs = {p.name: p for p in map(ProgramSpec, _walk(_libbpf.bpf_object__next_program, owner.ptr))}
        self.maps = {
            m.name: m for m in (MapSpec(ptr, self.btf) for ptr in _walk(_libbpf.bpf_object__next_map, owner.ptr))
        }
        self.rodata = self._config()

    @classmethod
    def open(cls, path: Union[str, os.PathLike[str]]) -> ObjectSpec:
        """Parses an object file (ELF, BTF, relocations); nothing reaches the kernel yet."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise BpfscopeError(errno.ENOENT, f"no BPF object at {path}")
        opts = _libbpf.BpfObjectOpenOpts(sz=ctypes.sizeof(_libbpf.BpfObjectOpenOpts))
        with _libbpf.captured_log() as log:
            ptr = _libbpf.bpf_object__open_file(path.encode(), opts)
        if not ptr:
            err = ctypes.get_errno() or errno.EINVAL
            raise SyscallError(err, f"open BPF object {path}", _last_warning(log))
        return cls(_Owner(ptr, path))

    def _config(self) -> Config:
        for name, spec in self.maps.items():
            if not name.endswith(".rodata"):
                continue
            size = ctypes.c_size_t()
            data = _libbpf.bpf_map__initial_value(spec._ptr, ctypes.byref(size))
            type_id = _libbpf.bpf_map__btf_value_type_id(spec._ptr)
            if not data or not type_id:
                break
            codec = self.btf.codec(type_id)
            buffer = (ctypes.c_char * size.value).from_address(data)
            return Config(np.frombuffer(memoryview(buffer), dtype=codec.dtype, count=1), codec)
        return Config(None, None)

    def load(self) -> Object:
        """Loads every program (autoload on) and creates every map. The spec is used up."""
        owner = self._owner
        if not owner.ptr:
            raise BpfscopeError(errno.EBADF, "this ObjectSpec was already loaded or closed")
        struct_ops.prepare(owner.ptr)  # registered through links, which go with the process
        with _libbpf.captured_log() as log:
            ret = _libbpf.bpf_object__load(owner.ptr)
        if ret < 0:
            error = _load_error(-ret, "\n".join(log), owner.path, self.programs)  # reads the failed program's type
            self.close()
            raise error
        self.rodata.frozen = True
        return Object(owner, self.btf, self.rodata)

    def pin_maps(self, directory: Optional[str], names: Iterable[str]) -> None:
        """`MapSpec.pin_to` for each map named, at `directory`/<name>; None pins nothing. What a tool
        pins this way is its state: counters that carry on across restarts (the agent's)."""
        if directory is not None:
            for name in names:
                self.maps[name].pin_to(os.path.join(directory, name))

    def close(self) -> None:
        self._owner.close()

    def __enter__(self) -> ObjectSpec:
        return self

    def __exit__(self, *exc: object) -> None:
        pass  # a spec handed to load() lives on in its Object; an unused one closes when collected


def _last_warning(log: list[str]) -> str:
    lines = [line.strip() for line in "".join(log).splitlines() if line.strip()]
    return lines[-1].removeprefix("libbpf: ") if lines else ""


def _load_error(err: int, log: str, path: str, programs: Mapping[str, ProgramSpec]) -> BpfscopeError:
    sections = _LOG_SECTION.findall(log)
    if sections:
        program, text = sections[-1]
        return VerifierError(program, err, text.splitlines())
    failed = _LOAD_FAILED.search(log)
    what = f"load program {failed.group(1)!r} of {path}" if failed else f"load {path}"
    if err in (errno.EPERM, errno.EACCES):
        # maps need CAP_BPF; a program, by its type, CAP_NET_ADMIN or CAP_PERFMON as well
        program_spec = programs.get(failed.group(1)) if failed else None
        needs = load_needs(_libbpf.bpf_program__type(program_spec._ptr)) if program_spec else (Capability.BPF,)
        return _libbpf.error(err, what, "+".join(cap.label for cap in needs))
    return SyscallError(err, what, _last_warning(log.splitlines(keepends=True)))


class Object:
    """A loaded object: programs ready to attach, maps ready to read. Close it (or use `with`)
    to release every fd; links made from its programs stay until they are closed."""

    def __init__(self, owner: _Owner, btf: Btf, rodata: Config) -> None:
        self._owner = owner
        self.btf = btf
        btf_fd = _libbpf.bpf_object__btf_fd(owner.ptr)  # -1 where the kernel took no BTF
        if btf_fd >= 0:
            btf.kernel_id = int(_libbpf.obj_info(btf_fd, _libbpf.BpfBtfInfo(), "the object's BTF").id)
        self.rodata = rodata
        self.programs: dict[str, Program] = {}
        for ptr in _walk(_libbpf.bpf_object__next_program, owner.ptr):
            if _libbpf.bpf_program__autoload(ptr):
                prog = Program(ptr, owner)
                self.programs[prog.name] = prog
        self._sections: dict[str, Globals] = {}
        self.maps: dict[str, Map] = {}
        for ptr in _walk(_libbpf.bpf_object__next_map, owner.ptr):
            fd = _libbpf.bpf_map__fd(ptr)
            name = _libbpf.bpf_map__name(ptr).decode()
            self.maps[name] = Map.create(
                fd, name=name, type=_libbpf.bpf_map__type(ptr), key_size=_libbpf.bpf_map__key_size(ptr),
                value_size=_libbpf.bpf_map__value_size(ptr), max_entries=_libbpf.bpf_map__max_entries(ptr),
                btf=btf, key_type_id=_libbpf.bpf_map__btf_key_type_id(ptr),
                value_type_id=_libbpf.bpf_map__btf_value_type_id(ptr), owner=owner,
            )

    def attach_all(self) -> LinkGroup:
        """Attaches every program whose section names its target (Program.autoattaches: kprobe/do_unlinkat,
        tp_btf/..., iter/task, ...) and registers every struct_ops map, as a libbpf skeleton's attach does;
        closing the group detaches them all. Programs that need an argument are left to their methods."""
        return auto.attach_all(self.programs.values(), self._owner.ptr)

    def attach_struct_ops(self, name: str) -> Link:
        """Registers struct_ops map `name` (a TCP congestion control, ...) through a link (Linux 6.4+)."""
        return struct_ops.attach(self._owner.ptr, name)

    def missed_runs(self) -> int:
        """Runs of this object's programs the kernel skipped (Program.missed_runs): events a tool did not see."""
        return sum(program.missed_runs for program in self.programs.values())

    def exported_type(self, name: str) -> TypeCodec:
        """The type a program published with BTF_EXPORT(type, name)."""
        var = self.btf.find(f"__btf_export_{name}", Kind.VAR)
        if var is None:
            raise BpfscopeError(errno.ENOENT, f"the object exports no type named {name!r} (BTF_EXPORT)")
        return self.btf.codec(self.btf.resolve(var.ref).ref)

    def ring_buffer(self, name: str, *, record: Union[str, Record, None] = None) -> RingBuffer:
        """A reader for ring buffer map `name`. Its records are `record`: a struct of the object's
        BTF by name ("event" for `struct event`), a TypeCodec, a numpy dtype, or `bytes` for records
        of any size; by default the type DEFINE_RINGBUF exported for the ring. DEFINE_RINGBUF's
        counter beside it (`name`_lost) is the reader's `lost`."""
        ring = self.maps.get(name)
        if ring is None or ring.type != MapType.RINGBUF:
            raise BpfscopeError(errno.ENOENT, f"the object has no ring buffer map {name!r}")
        return RingBuffer(ring, record=self._record(name, record, "ring buffer", "DEFINE_RINGBUF"),
                          lost=self.maps.get(f"{name}_lost"))

    def perf_buffer(self, name: str, *, record: Union[str, Record, None] = None, pages: int = 8,
                    wakeup_events: int = 1, watermark: int = 0) -> PerfBuffer:
        """A reader for perf event array `name` (bpf_perf_event_output). Its records are `record`, as
        for ring_buffer(); by default the type BTF_EXPORT(type, `name`) exported. The options are
        PerfBuffer's: `pages` per CPU, a wakeup every `wakeup_events` samples or `watermark` bytes."""
        events = self.maps.get(name)
        if events is None or events.type != MapType.PERF_EVENT_ARRAY:
            raise BpfscopeError(errno.ENOENT, f"the object has no perf event array map {name!r}")
        record = self._record(name, record, "perf buffer", f"BTF_EXPORT(type, {name})")
        return PerfBuffer(events, record=record, pages=pages, wakeup_events=wakeup_events, watermark=watermark)

    def _record(self, name: str, record: Union[str, Record, None], what: str, exporter: str) -> Record:
        """The record type a reader of buffer `name` was given, or the one the program exported for it."""
        if isinstance(record, str):
            return self.btf.struct(record)
        if record is not None:
            return record
        try:
            return self.exported_type(name)
        except BpfscopeError:
            raise BpfscopeError(errno.ENOENT, f"{what} {name!r} has no record type exported by {exporter}: name one, "
                                "as record=\"event\", a numpy dtype or bytes") from None

    @property
    def bss(self) -> Globals:
        """The zeroed global variables (.bss), read and written while the programs run."""
        return self.datasec(".bss")

    @property
    def data(self) -> Globals:
        """The initialised global variables (.data), read and written while the programs run."""
        return self.datasec(".data")

    def datasec(self, name: str) -> Globals:
        """The global variables of data section `name`: ".bss", ".data", ".data.NAME" (globals declared
        with SEC(".data.NAME")), or ".rodata" (read only: frozen at load). Mapped into memory where the
        kernel allows it (Linux 5.5+); made on first use, closed with the object."""
        section = self._sections.get(name)
        if section is None:
            found = section_map(self.maps.values(), name)
            if found is None:
                raise BpfscopeError(errno.ENOENT, f"the object has no {name} section (no global variables there)")
            section = self._sections[name] = Globals(found)
        return section

    @property
    def closed(self) -> bool:
        return not self._owner.ptr

    def close(self) -> None:
        sections, self._sections = list(self._sections.values()), {}
        for section in sections:
            section.close()
        for m in self.maps.values():
            m._fd = -1
        self._owner.close()

    def __enter__(self) -> Object:
        return self

    def __exit__(
        self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.close()


def load(path: Union[str, os.PathLike[str]], **rodata: Any) -> Object:
    """Opens, configures (`cfg_x=...` for each const volatile global) and loads in one call."""
    spec = ObjectSpec.open(path)
    for key, value in rodata.items():
        spec.rodata[key] = value
    return spec.load()
