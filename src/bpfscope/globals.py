"""Global variables of a loaded object, read and written from Python while its programs run.

libbpf turns each data section of the object into a one-entry array map: `.bss` (zeroed globals),
`.data` (initialised ones), `.data.NAME` (globals placed with SEC(".data.NAME")), `.rodata` (const
volatile knobs, frozen at load). The section's BTF (a DATASEC) types every variable in it.

Where the kernel lets user space map such a map (BPF_F_MMAPABLE, Linux 5.5+; libbpf sets the flag
where the kernel has it), a section is read and written in place, in the memory the programs use, as
a skeleton's `obj->bss` is: a read costs no system call and `array` is a live numpy view. Before that
every read is a lookup of key 0 and every write a lookup, a change and an update of the whole
section: a variable a program changes between the two loses that change."""

from __future__ import annotations

import ctypes
import errno
import mmap
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Optional

import numpy as np

from . import _libbpf
from ._uapi import BPF_F_MMAPABLE
from .btf import Kind, TypeCodec
from .errors import BpfscopeError, SyscallError, TypeMismatchError
from .maps import Map

__all__ = ["Globals", "section_map"]


def section_map(maps: Iterable[Map], name: str) -> Optional[Map]:
    """The map libbpf made for data section `name` (".bss", ".data.NAME"): found by its value's BTF
    type, the section itself, since libbpf names the map after the object (`prog.bss`)."""
    for candidate in maps:
        value = candidate.value
        if isinstance(value, TypeCodec):
            section = value.btf.resolve(value.type_id)
            if section.kind == Kind.DATASEC and section.name == name:
                return candidate
    return None


class Globals(Mapping[str, Any]):
    """The variables of one data section of a loaded object, by name: `obj.bss["runs"]` reads one as
    plain Python (int, bytes, a frozen dataclass), `obj.data["step"] = 5` writes one, and the next run
    of a program sees it. `mapped` says whether the section is in this process's memory; then `array`
    is the section itself, a one-record numpy array (writes through it are the program's too). A
    section the kernel froze (.rodata) reads only. `mapped=False` reads and writes through map
    lookups and updates even where the kernel could map it."""

    def __init__(self, section: Map, *, mapped: Optional[bool] = None) -> None:
        codec = section.value
        datasec = codec.btf.resolve(codec.type_id) if isinstance(codec, TypeCodec) else None
        if not isinstance(codec, TypeCodec) or datasec is None or datasec.kind != Kind.DATASEC:
            raise TypeMismatchError(f"map {section.name!r} holds no data section (its value is no BTF DATASEC)")
        self.name = datasec.name
        self.map = section
        self.dtype = codec.dtype
        self._variables = {m.name: (m.type_id, m.bit_offset // 8) for m in datasec.members}
        self._codecs: dict[str, TypeCodec] = {}
        self._mmap: Optional[mmap.mmap] = None
        self.writable = True
        flags = int(_libbpf.obj_info(section.fd, _libbpf.BpfMapInfo(), f"map {section.name!r}").map_flags)
        if mapped is None:
            mapped = bool(flags & BPF_F_MMAPABLE)
        self._array: Optional[np.ndarray[Any, Any]] = None
        if mapped:
            self._array = self._map_memory()

    def _map_memory(self) -> np.ndarray[Any, Any]:
        length = -(-self.map.value_size // mmap.PAGESIZE) * mmap.PAGESIZE
        try:
            self._mmap = mmap.mmap(self.map.fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except PermissionError:  # a frozen map (.rodata) maps read only
            self._mmap = mmap.mmap(self.map.fd, length, mmap.MAP_SHARED, mmap.PROT_READ)
            self.writable = False
        except OSError as exc:
            raise SyscallError(exc.errno or errno.EINVAL, f"map section {self.name} into memory") from None
        return np.frombuffer(self._mmap, dtype=self.dtype, count=1)

    @property
    def mapped(self) -> bool:
        return self._array is not None

    @property
    def array(self) -> np.ndarray[Any, Any]:
        """The section as a one-record array of its dtype, live: what the programs see, as they change
        it. Only where it is mapped (`mapped`); else read() a copy."""
        if self._array is None:
            raise BpfscopeError(errno.EOPNOTSUPP, f"section {self.name} is not mapped into memory: read() a copy")
        return self._array

    def read(self) -> np.ndarray[Any, Any]:
        """A copy of the whole section as a one-record array of its dtype."""
        if self._array is not None:
            return self._array.copy()
        return self._lookup()

    def _lookup(self) -> np.ndarray[Any, Any]:
        out = np.zeros(1, dtype=self.dtype)
        key = ctypes.c_uint32(0)
        _libbpf.check(
            _libbpf.bpf_map_lookup_elem(self.map.fd, ctypes.byref(key), _libbpf.buffer_address(out)),
            f"read section {self.name}",
        )
        return out

    def _codec(self, name: str) -> TypeCodec:
        codec = self._codecs.get(name)
        if codec is None:
            if name not in self._variables:
                known = ", ".join(self._variables) or "none"
                raise KeyError(f"no global variable {name!r} in {self.name} (it has: {known})")
            value = self.map.value
            assert isinstance(value, TypeCodec)
            codec = self._codecs[name] = value.btf.codec(self._variables[name][0])
        return codec

    def __getitem__(self, name: str) -> Any:
        codec = self._codec(name)
        section = self._array if self._array is not None else self._lookup()
        return codec.to_python(section[name][0])

    def __setitem__(self, name: str, value: Any) -> None:
        if not self.writable:
            raise BpfscopeError(errno.EROFS, f"cannot set {name!r}: section {self.name} is frozen")
        encoded = self._codec(name).to_array([value])
        if self._array is not None:
            self._array[name][0] = encoded[0]  # one store of the variable's type, not a byte copy
            return
        section = self._lookup()
        section[name][0] = encoded[0]
        key = ctypes.c_uint32(0)
        _libbpf.check(
            _libbpf.bpf_map_update_elem(self.map.fd, ctypes.byref(key), _libbpf.buffer_address(section), 0),
            f"write {name!r} to section {self.name}",
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self._variables)

    def __len__(self) -> int:
        return len(self._variables)

    def __repr__(self) -> str:
        return f"<Globals {self.name} {', '.join(self._variables)}{' mapped' if self.mapped else ''}>"

    def close(self) -> None:
        """Unmaps the section; the map itself belongs to the object. Safe to call twice."""
        memory, self._mmap = self._mmap, None
        self._array = None
        if memory is not None:
            try:
                memory.close()
            except BufferError:
                pass  # a caller still holds a view of `array`: unmapped when it dies
