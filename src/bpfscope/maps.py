"""Maps typed from BTF. One value: plain Python (int, bytes, IntEnum, frozen dataclass). A whole
map: two numpy structured arrays from bpf_map_lookup_batch, the default and fast path; per-key
iteration only where the kernel has no batch operations for the map type."""

from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Protocol, Union

import numpy as np

from . import _libbpf
from ._uapi import ENOTSUPP, MapType, UpdateFlags
from .btf import Btf, MapDefinition, RawCodec, TypeCodec
from .errors import BpfscopeError, TypeMismatchError
from .pin import ensure_pin_dir

__all__ = [
    "Map",
    "MapType",
    "UpdateFlags",
    "HashMap",
    "ArrayMap",
    "PerCpuHashMap",
    "PerCpuArrayMap",
    "LpmTrieMap",
    "ProgramArray",
    "MapOfMaps",
    "MapTemplate",
    "sum_cpus",
]

Codec = Union[TypeCodec, RawCodec]
_BATCH_CHUNK = 1 << 16


def possible_cpus() -> int:
    return int(_libbpf.check(_libbpf.libbpf_num_possible_cpus(), "count possible CPUs"))


def sum_cpus(values: np.ndarray[Any, Any], axis: Optional[int] = None) -> np.ndarray[Any, Any]:
    """Adds per-CPU values (CPUs on `axis`, by default the last) field by field, arrays of structs
    included, into one value per entry; fields that are not numbers (char arrays) keep CPU 0's."""
    axis = values.ndim - 1 if axis is None else axis
    if values.dtype.names is None:
        if values.dtype.kind in "iuf":
            return np.asarray(values.sum(axis=axis, dtype=values.dtype.type))
        return np.asarray(np.take(values, 0, axis=axis))
    out = np.zeros(values.shape[:axis] + values.shape[axis + 1 :], dtype=values.dtype)
    for name in values.dtype.names:
        out[name] = sum_cpus(values[name], axis)  # a subarray field adds its dimensions after `axis`
    return out


def _from_bytes(raw: bytes, dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
    """A writable array over exactly these bytes, padding included: numpy's structured copies move
    fields only and leave padding undefined, and a hash map's key is all of its bytes."""
    return np.frombuffer(bytearray(raw), dtype=dtype)


def _concatenate(parts: list[np.ndarray[Any, Any]], dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
    """np.concatenate drops the padding from a structured dtype; join the raw bytes instead."""
    if len(parts) == 1:
        return parts[0]
    shape = (-1,) + parts[0].shape[1:]
    return _from_bytes(b"".join(part.tobytes() for part in parts), dtype).reshape(shape)


class NoBatchLookup(Exception):
    """The map type (or the kernel) has no BPF_MAP_LOOKUP_BATCH."""


def lookup_batches(fd: int, key_size: int, alloc: Callable[[int], tuple[Any, Any]], chunk: int,
                   what: str) -> Iterator[tuple[Any, Any, int]]:
    """(keys, values, count) of each bpf_map_lookup_batch call over the whole map, `chunk` entries at a
    time (more where one hash bucket holds more), into fresh buffers from `alloc(chunk)`: one batch at a
    time, so a reader can stop early. Raises NoBatchLookup before anything is read where the map type
    has no batch lookup."""
    token_in = ctypes.create_string_buffer(max(key_size, 8))
    token_out = ctypes.create_string_buffer(max(key_size, 8))
    opts = _libbpf.BpfMapBatchOpts(sz=ctypes.sizeof(_libbpf.BpfMapBatchOpts))
    first = True
    while True:
        keys, values = alloc(chunk)
        count = ctypes.c_uint32(chunk)
        ret = _libbpf.bpf_map_lookup_batch(fd, None if first else token_in, token_out, _libbpf.buffer_address(keys),
                                           _libbpf.buffer_address(values), ctypes.byref(count), opts)
        err = -ret if ret < 0 else 0
        if first and err in (errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP):
            raise NoBatchLookup(what)
        if err == errno.ENOSPC and count.value == 0:
            chunk *= 2  # one hash bucket holds more entries than the chunk
            continue
        if err not in (0, errno.ENOENT):
            _libbpf.check(ret, f"batch lookup in {what}")
        if count.value:
            yield keys, values, count.value
        if err == errno.ENOENT:
            return
        ctypes.memmove(token_in, token_out, len(token_out))
        first = False


class Map:
    """A BPF map, typed by the BTF of its key and value. Acts as a mutable mapping."""

    per_cpu = False

    def __init__(
        self,
        fd: int,
        *,
        name: str,
        type: Union[MapType, int],
        key_size: int,
        value_size: int,
        max_entries: int,
        key: Codec,
        value: Codec,
        owner: object = None,
    ) -> None:
        self._fd = fd
        self._owner = owner  # an Object owns the fd; a map from a pin owns it itself
        self._owns_fd = False
        self.name = name
        self.type = type
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self.key = key
        self.value = value
        for role, codec, size in (("key", key, key_size), ("value", value, value_size)):
            if size and codec.dtype.itemsize != size:
                raise TypeMismatchError(
                    f"map {name!r}: BTF {role} type {codec.name} is {codec.dtype.itemsize} bytes, "
                    f"the map's {role} is {size}"
                )
        self._cpus = possible_cpus() if self.per_cpu else 1
        # The kernel lays per-CPU values out 8-byte aligned, one slot per possible CPU.
        slot = (value_size + 7) & ~7 if self.per_cpu else value_size
        self._slot_dtype = (
            value.dtype
            if slot == value.dtype.itemsize
            else np.dtype({"names": ["v"], "formats": [value.dtype], "offsets": [0], "itemsize": slot})
        )

    @property
    def fd(self) -> int:
        if self._fd < 0:
            raise BpfscopeError(errno.EBADF, f"map {self.name!r} is closed")
        return self._fd

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.name} {self.key.name} -> {self.value.name} "
                f"max_entries={self.max_entries}>")

    # --- buffers ---

    def _value_array(self, count: int) -> np.ndarray[Any, Any]:
        shape = (count, self._cpus) if self.per_cpu else (count,)
        return np.zeros(shape, dtype=self._slot_dtype)

    def _unslot(self, values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return values if values.dtype == self.value.dtype else values["v"]

    def _key_bytes(self, key: Any) -> ctypes.Array[ctypes.c_char]:
        return ctypes.create_string_buffer(self.key.to_bytes(key), self.key_size)

    def _encode_value(self, value: Any) -> np.ndarray[Any, Any]:
        buf = self._value_array(1)
        encoded = self.value.to_array(
            list(value) if self.per_cpu and isinstance(value, (list, tuple)) else [value]
        )
        if self.per_cpu and len(encoded) not in (1, self._cpus):
            raise TypeMismatchError(f"map {self.name!r} takes one value or {self._cpus} (one per CPU)")
        target = self._unslot(buf)
        target[...] = encoded if not self.per_cpu else encoded.reshape(1, -1)
        return buf

    def _decode_value(self, values: np.ndarray[Any, Any]) -> Any:
        values = self._unslot(values)
        if self.per_cpu:
            return tuple(self.value.to_python(v) for v in values[0])
        return self.value.to_python(values[0])

    # --- one key ---

    def lookup(self, key: Any) -> Any:
        """The value for `key`, or None if it has none. Per-CPU maps: a tuple, one value per CPU."""
        values = self._value_array(1)
        ret = _libbpf.bpf_map_lookup_elem(self.fd, self._key_bytes(key), _libbpf.buffer_address(values))
        if ret == -errno.ENOENT:
            return None
        _libbpf.check(ret, f"lookup in map {self.name!r}")
        return self._decode_value(values)

    def update(self, key: Any, value: Any, flags: UpdateFlags = UpdateFlags.ANY) -> None:
        """Sets `key` to `value`. Per-CPU maps take one value for every CPU, or one per CPU."""
        values = self._encode_value(value)
        _libbpf.check(
            _libbpf.bpf_map_update_elem(self.fd, self._key_bytes(key), _libbpf.buffer_address(values), flags),
            f"update map {self.name!r}",
        )

    def delete(self, key: Any) -> bool:
        """Removes `key`; False if it was not there."""
        ret = _libbpf.bpf_map_delete_elem(self.fd, self._key_bytes(key))
        if ret == -errno.ENOENT:
            return False
        _libbpf.check(ret, f"delete from map {self.name!r}")
        return True

    def __getitem__(self, key: Any) -> Any:
        value = self.lookup(key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        value = self.lookup(key)
        return default if value is None else value

    def __setitem__(self, key: Any, value: Any) -> None:
        self.update(key, value)

    def __delitem__(self, key: Any) -> None:
        if not self.delete(key):
            raise KeyError(key)

    def __contains__(self, key: Any) -> bool:
        return self.lookup(key) is not None

    def empty(self) -> bool:
        """True when the map has no entry: one get_next_key call, whatever its size."""
        first = np.zeros(1, dtype=self.key.dtype)
        ret = _libbpf.bpf_map_get_next_key(self.fd, None, _libbpf.buffer_address(first))
        if ret == -errno.ENOENT:
            return True
        _libbpf.check(ret, f"iterate map {self.name!r}")
        return False

    # --- whole map ---

    def lookup_batch(self) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """Every key and value as two structured arrays (per-CPU values: shape [n, cpus]), read
        with bpf_map_lookup_batch in chunks; by key where the map type has no batch lookup."""
        parts = list(self.batches())
        if not parts:
            return np.zeros(0, dtype=self.key.dtype), self._unslot(self._value_array(0))
        keys, values = zip(*parts)
        return _concatenate(list(keys), self.key.dtype), _concatenate(list(values), values[0].dtype)

    def batches(self, chunk: Optional[int] = None) -> Iterator[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]]:
        """The map's keys and values as lookup_batch has them, one bpf_map_lookup_batch call's worth
        (`chunk` entries, by default up to 65536) at a time, so a reader can stop early; all at once,
        read by key, where the map type has no batch lookup. Empty batches are left out."""
        chunk = chunk or max(1, min(self.max_entries, _BATCH_CHUNK))

        def alloc(n: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
            return np.zeros(n, dtype=self.key.dtype), self._value_array(n)

        try:
            for keys, values, count in lookup_batches(self.fd, self.key_size, alloc, chunk, f"map {self.name!r}"):
                yield keys[:count], self._unslot(values[:count])
        except NoBatchLookup:
            keys, values = self._lookup_by_key()
            if len(keys):
                yield keys, values

    def _lookup_by_key(self) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        keys = _from_bytes(b"".join(self._raw_keys()), self.key.dtype)
        values = self._value_array(len(keys))
        kept = np.ones(len(keys), dtype=bool)
        for i in range(len(keys)):
            ret = _libbpf.bpf_map_lookup_elem(
                self.fd, _libbpf.buffer_address(keys[i : i + 1]), _libbpf.buffer_address(values[i : i + 1])
            )
            if ret == -errno.ENOENT:
                kept[i] = False  # deleted while we walked
            else:
                _libbpf.check(ret, f"lookup in map {self.name!r}")
        return keys[kept], self._unslot(values[kept])

    def _raw_keys(self) -> Iterator[bytes]:
        key = np.zeros(1, dtype=self.key.dtype)
        next_key = np.zeros(1, dtype=self.key.dtype)
        current = None
        while True:
            ret = _libbpf.bpf_map_get_next_key(self.fd, current, _libbpf.buffer_address(next_key))
            if ret == -errno.ENOENT:
                return
            _libbpf.check(ret, f"iterate map {self.name!r}")
            key[...] = next_key
            yield key.tobytes()
            current = _libbpf.buffer_address(key)

    def update_batch(self, keys: Any, values: Any, flags: UpdateFlags = UpdateFlags.ANY) -> None:
        """Writes many entries in one bpf_map_update_batch call."""
        key_array = np.ascontiguousarray(self.key.to_array(keys))
        value_array = self._value_array(len(key_array))
        encoded = self.value.to_array(values)
        self._unslot(value_array)[...] = encoded.reshape(value_array.shape[:1] + (-1,)) if self.per_cpu else encoded
        count = ctypes.c_uint32(len(key_array))
        opts = _libbpf.BpfMapBatchOpts(sz=ctypes.sizeof(_libbpf.BpfMapBatchOpts), elem_flags=int(flags))
        _libbpf.check(
            _libbpf.bpf_map_update_batch(self.fd, _libbpf.buffer_address(key_array),
                                         _libbpf.buffer_address(value_array), ctypes.byref(count), opts),
            f"batch update map {self.name!r} ({count.value} of {len(key_array)} written)",
        )

    def delete_batch(self, keys: Any) -> None:
        """Deletes many keys in one bpf_map_delete_batch call."""
        key_array = np.ascontiguousarray(self.key.to_array(keys))
        count = ctypes.c_uint32(len(key_array))
        opts = _libbpf.BpfMapBatchOpts(sz=ctypes.sizeof(_libbpf.BpfMapBatchOpts))
        _libbpf.check(
            _libbpf.bpf_map_delete_batch(self.fd, _libbpf.buffer_address(key_array), ctypes.byref(count), opts),
            f"batch delete from map {self.name!r}",
        )

    def items(self) -> list[tuple[Any, Any]]:
        """Every entry as Python values (read in one batch)."""
        keys, values = self.lookup_batch()
        to_key, to_value = self.key.to_python, self.value.to_python
        if self.per_cpu:
            return [(to_key(k), tuple(to_value(v) for v in row)) for k, row in zip(keys, values)]
        return [(to_key(k), to_value(v)) for k, v in zip(keys, values)]

    def keys(self) -> list[Any]:
        return [k for k, _ in self.items()]

    def values(self) -> list[Any]:
        return [v for _, v in self.items()]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.lookup_batch()[0])

    def clear(self) -> None:
        keys, _ = self.lookup_batch()
        if len(keys):
            self.delete_batch(keys)

    # --- pins ---

    def pin(self, path: str) -> None:
        """Pins the map in bpffs so other processes (and later runs) can open it."""
        ensure_pin_dir(path)
        _libbpf.check(_libbpf.bpf_obj_pin(self.fd, path.encode()), f"pin map {self.name!r} at {path}")

    @staticmethod
    def from_pin(path: str) -> Map:
        """Opens a pinned map, typed by the BTF the kernel keeps for it."""
        return Map.from_fd(_libbpf.check(_libbpf.bpf_obj_get(path.encode()), f"open pinned map {path}"), path)

    @staticmethod
    def from_fd(fd: int, what: str, *, template: Optional[MapTemplate] = None) -> Map:
        """A map's fd (from a pin, or by id) as a Map typed by the BTF the kernel keeps for it, or where
        it keeps none, by `template`'s types if it fits. The Map owns the fd: closing it closes the fd,
        and so does a failure here."""
        try:
            info = _libbpf.obj_info(fd, _libbpf.BpfMapInfo(), what)
            btf, key_type_id, value_type_id = None, info.btf_key_type_id, info.btf_value_type_id
            if info.btf_id:
                btf = Btf(_libbpf.kernel_btf(info.btf_id))
                btf.kernel_id = info.btf_id
            elif template is not None and (template.type, template.key_size, template.value_size) == (
                    info.type, info.key_size, info.value_size):
                btf, key_type_id, value_type_id = template.btf, template.key_type_id, template.value_type_id
            m = Map.create(fd, name=info.name.decode(), type=info.type, key_size=info.key_size,
                           value_size=info.value_size, max_entries=info.max_entries, btf=btf,
                           key_type_id=key_type_id, value_type_id=value_type_id)
        except BaseException:
            os.close(fd)
            raise
        m._owns_fd = True
        return m

    def close(self) -> None:
        """Closes a map opened from a pin; maps of an Object close with it."""
        if getattr(self, "_owns_fd", False) and self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> Map:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    @staticmethod
    def create(
        fd: int,
        *,
        name: str,
        type: int,
        key_size: int,
        value_size: int,
        max_entries: int,
        btf: Optional[Btf],
        key_type_id: int,
        value_type_id: int,
        owner: object = None,
    ) -> Map:
        """The Map subclass for `type`, with codecs from BTF (raw integers or bytes without it)."""
        map_type = MapType(type) if type in MapType._value2member_map_ else type

        def codec(type_id: int, size: int) -> Codec:
            return btf.codec(type_id) if btf is not None and type_id else RawCodec(size)

        cls = _MAP_CLASSES.get(map_type, Map)
        created = cls(
            fd, name=name, type=map_type, key_size=key_size, value_size=value_size,
            max_entries=max_entries, key=codec(key_type_id, key_size),
            value=codec(value_type_id, value_size), owner=owner,
        )
        if isinstance(created, MapOfMaps) and btf is not None:
            definition = btf.map_definition(name)
            if definition is not None and definition.inner is not None:
                created.inner_template = MapTemplate.from_definition(definition.inner, btf, name=f"{name}_inner")
        return created


class HashMap(Map):
    """BPF_MAP_TYPE_HASH and BPF_MAP_TYPE_LRU_HASH."""


class ArrayMap(Map):
    """BPF_MAP_TYPE_ARRAY: every index from 0 to max_entries-1 exists; delete is not allowed."""

    def __len__(self) -> int:
        return self.max_entries


class PerCpuHashMap(Map):
    """BPF_MAP_TYPE_PERCPU_HASH and LRU_PERCPU_HASH: each value once per possible CPU."""

    per_cpu = True

    def sum(self, key: Any) -> Any:
        """One value for `key`: the per-CPU values added field by field."""
        values = self._value_array(1)
        ret = _libbpf.bpf_map_lookup_elem(self.fd, self._key_bytes(key), _libbpf.buffer_address(values))
        if ret == -errno.ENOENT:
            raise KeyError(key)
        _libbpf.check(ret, f"lookup in map {self.name!r}")
        return self.value.to_python(sum_cpus(self._unslot(values))[0])

    def lookup_batch_sum(self) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """lookup_batch with the CPUs added up: one value per key."""
        keys, values = self.lookup_batch()
        return keys, sum_cpus(values)


class PerCpuArrayMap(PerCpuHashMap, ArrayMap):
    """BPF_MAP_TYPE_PERCPU_ARRAY."""


class LpmTrieMap(Map):
    """BPF_MAP_TYPE_LPM_TRIE: keys are {prefixlen, data}; no batch lookup in the kernel."""


class _HasFd(Protocol):
    @property
    def fd(self) -> int: ...


def _fd_of(value: Union[_HasFd, int]) -> int:
    return value if isinstance(value, int) else value.fd


class ProgramArray(Map):
    """BPF_MAP_TYPE_PROG_ARRAY, the jump table of bpf_tail_call: `jumps[1] = obj.programs["parse_ipv6"]`
    (a Program, or a program's fd) fills a slot, `del jumps[1]` empties it. Reading a slot gives the
    program's id, which is what the kernel reports. The kernel empties every slot once no process
    holds the map (no fd, no pin): pin it to keep a jump table past the process that filled it."""

    def update(self, key: Any, value: Union[_HasFd, int], flags: UpdateFlags = UpdateFlags.ANY) -> None:
        super().update(key, _fd_of(value), flags)


@dataclass(frozen=True)
class MapTemplate:
    """What a map is made from, as a map of maps declares its inner maps (`__array(values, struct
    inner)`): the kernel takes as an inner map only one of this type, key and value size and flags
    (and max_entries too unless the flags hold BPF_F_INNER_MAP). `create()` makes one."""

    name: str
    type: Union[MapType, int]
    key_size: int
    value_size: int
    max_entries: int
    flags: int = 0
    btf: Optional[Btf] = None
    key_type_id: int = 0
    value_type_id: int = 0

    @staticmethod
    def from_definition(definition: MapDefinition, btf: Optional[Btf], *, name: str) -> MapTemplate:
        map_type = definition.type
        return MapTemplate(
            name=name, type=MapType(map_type) if map_type in MapType._value2member_map_ else map_type,
            key_size=definition.key_size, value_size=definition.value_size, max_entries=definition.max_entries,
            flags=definition.map_flags, btf=btf, key_type_id=definition.key_type_id,
            value_type_id=definition.value_type_id,
        )

    def create(self, *, name: Optional[str] = None, max_entries: Optional[int] = None) -> Map:
        """A new map of this template (bpf_map_create), typed by its BTF (in the kernel too, where that
        BTF is loaded: an object's is) and owning its fd: put it into a map of maps, then close it if
        you like: the map of maps keeps it alive."""
        name = self.name if name is None else name
        entries = self.max_entries if max_entries is None else max_entries
        opts = _libbpf.BpfMapCreateOpts(sz=ctypes.sizeof(_libbpf.BpfMapCreateOpts), map_flags=self.flags)
        btf_fd = -1
        btf_id = self.btf.kernel_id if self.btf is not None else 0
        if btf_id and (self.key_type_id or self.value_type_id):
            btf_fd = _libbpf.check(_libbpf.bpf_btf_get_fd_by_id(btf_id), f"open BTF {btf_id} of map {name!r}")
            opts.btf_fd, opts.btf_key_type_id, opts.btf_value_type_id = btf_fd, self.key_type_id, self.value_type_id
        try:
            fd = _libbpf.check(
                _libbpf.bpf_map_create(int(self.type), name[:15].encode(), self.key_size, self.value_size, entries,
                                       ctypes.addressof(opts)),
                f"create map {name!r}",
            )
        finally:
            if btf_fd >= 0:
                os.close(btf_fd)
        try:
            created = Map.create(fd, name=name, type=self.type, key_size=self.key_size, value_size=self.value_size,
                                 max_entries=entries, btf=self.btf, key_type_id=self.key_type_id,
                                 value_type_id=self.value_type_id)
        except BaseException:
            os.close(fd)
            raise
        created._owns_fd = True
        return created


class MapOfMaps(Map):
    """BPF_MAP_TYPE_ARRAY_OF_MAPS and HASH_OF_MAPS: each value is another map. `outer[key] = inner`
    puts a Map (or a map's fd) there, atomically replacing what was there for the programs that look
    it up next; `outer[key]` opens the map there, typed by its BTF (a Map that owns its fd: close it,
    or use `with`); `inner_id(key)` gives just its id. Whole-map reads (items, lookup_batch) give the
    ids. `inner_template.create()` makes a new inner map, as the map's declaration defines them."""

    inner_template: Optional[MapTemplate] = None

    def update(self, key: Any, value: Union[_HasFd, int], flags: UpdateFlags = UpdateFlags.ANY) -> None:
        super().update(key, _fd_of(value), flags)

    def inner_id(self, key: Any) -> Optional[int]:
        """The id of the map at `key`, or None if there is none."""
        found = super().lookup(key)
        return None if found is None else int(found)

    def lookup(self, key: Any) -> Optional[Map]:
        """The map at `key`, opened by its id, or None if there is none."""
        inner_id = self.inner_id(key)
        if inner_id is None:
            return None
        what = f"map {inner_id} at key {key!r} of map {self.name!r}"
        return Map.from_fd(_libbpf.check(_libbpf.bpf_map_get_fd_by_id(inner_id), f"open {what}"), what,
                           template=self.inner_template)

    def __contains__(self, key: Any) -> bool:
        return self.inner_id(key) is not None


_MAP_CLASSES: dict[Any, type[Map]] = {
    MapType.HASH: HashMap,
    MapType.LRU_HASH: HashMap,
    MapType.ARRAY: ArrayMap,
    MapType.PERCPU_HASH: PerCpuHashMap,
    MapType.LRU_PERCPU_HASH: PerCpuHashMap,
    MapType.PERCPU_ARRAY: PerCpuArrayMap,
    MapType.LPM_TRIE: LpmTrieMap,
    MapType.PROG_ARRAY: ProgramArray,
    MapType.ARRAY_OF_MAPS: MapOfMaps,
    MapType.HASH_OF_MAPS: MapOfMaps,
}

