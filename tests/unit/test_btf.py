"""The BTF decoder on blobs built here byte by byte, and on the objects the project ships (no root)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bpfscope import _libbpf
from bpfscope.btf import Btf, Kind
from bpfscope.errors import TypeMismatchError
from bpfscope.object import tool_object


class BtfWriter:
    """Just enough of a BTF encoder to describe ints, enums, arrays and structs."""

    def __init__(self) -> None:
        self.types: list[bytes] = []
        self.strings = bytearray(b"\0")

    def _name(self, name: str) -> int:
        if not name:
            return 0
        offset = len(self.strings)
        self.strings += name.encode() + b"\0"
        return offset

    def _add(self, data: bytes) -> int:
        self.types.append(data)
        return len(self.types)

    def int_(self, name: str, size: int, signed: bool = False, char: bool = False) -> int:
        encoding = (1 if signed else 0) | (2 if char else 0)
        return self._add(struct.pack("=IIII", self._name(name), Kind.INT << 24, size, (encoding << 24) | size * 8))

    def array(self, elem: int, index: int, count: int) -> int:
        return self._add(struct.pack("=IIIIII", 0, Kind.ARRAY << 24, 0, elem, index, count))

    def enum(self, name: str, values: dict[str, int]) -> int:
        body = b"".join(struct.pack("=Ii", self._name(k), v) for k, v in values.items())
        return self._add(struct.pack("=III", self._name(name), (Kind.ENUM << 24) | len(values), 4) + body)

    def struct_(self, name: str, size: int, members: list[tuple[str, int, int]]) -> int:
        body = b"".join(struct.pack("=III", self._name(n), t, off * 8) for n, t, off in members)
        return self._add(struct.pack("=III", self._name(name), (Kind.STRUCT << 24) | len(members), size) + body)

    def blob(self) -> bytes:
        types = b"".join(self.types)
        header = struct.pack("=HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(self.strings))
        return header + types + bytes(self.strings)


INT_SIZES = st.sampled_from([1, 2, 4, 8])


@given(st.lists(st.tuples(INT_SIZES, st.booleans(), st.integers(0, 3)), min_size=1, max_size=12))
def test_struct_layout_follows_btf_offsets(fields):
    w = BtfWriter()
    members, offset = [], 0
    for i, (size, signed, gap) in enumerate(fields):
        offset = (offset + gap + size - 1) // size * size  # aligned, with arbitrary padding between
        members.append((f"f{i}", w.int_(f"t{i}", size, signed), offset))
        offset += size
    total = offset + 3
    struct_id = w.struct_("rec", total, members)
    codec = Btf(w.blob()).codec(struct_id)
    assert codec.dtype.itemsize == total
    for (name, _type_id, off), (size, signed, _) in zip(members, fields):
        field_dtype, field_offset = codec.dtype.fields[name][:2]
        assert field_offset == off
        assert field_dtype == np.dtype(f"{'i' if signed else 'u'}{size}")
    values = {f"f{i}": (-1 if signed else 1) * i for i, (_, signed, _) in enumerate(fields)}
    decoded = codec.to_python(np.frombuffer(codec.to_bytes(values), dtype=codec.dtype)[0])
    assert {k: getattr(decoded, k) for k in values} == values


def test_char_arrays_are_bytes_and_enums_are_intenums():
    w = BtfWriter()
    char = w.int_("char", 1, signed=True, char=True)
    u32 = w.int_("unsigned int", 4)
    comm = w.array(char, u32, 16)
    state = w.enum("state", {"IDLE": 0, "BUSY": 1})
    rec = w.struct_("task", 24, [("comm", comm, 0), ("state", state, 16), ("pid", u32, 20)])
    codec = Btf(w.blob()).codec(rec)
    assert codec.dtype["comm"] == np.dtype("S16")
    value = codec.to_python(np.frombuffer(codec.to_bytes({"comm": b"bash", "state": 1, "pid": 7}),
                                          dtype=codec.dtype)[0])
    assert value.comm == b"bash" and type(value.comm) is bytes
    assert value.state.name == "BUSY" and value.pid == 7


def test_unknown_field_is_a_type_mismatch():
    w = BtfWriter()
    rec = w.struct_("r", 4, [("a", w.int_("u32", 4), 0)])
    with pytest.raises(TypeMismatchError, match="no field 'b'"):
        Btf(w.blob()).codec(rec).to_bytes({"b": 1})


def test_not_btf_is_rejected():
    with pytest.raises(TypeMismatchError, match="not BTF"):
        Btf(b"\0" * 32)


def test_shipped_object_types_decode():
    ptr = _libbpf.check_ptr(_libbpf.btf__parse(str(tool_object("packets")).encode(), None), "parse BTF")
    try:
        btf = Btf(_libbpf.raw_btf(ptr))
    finally:
        _libbpf.btf__free(ptr)
    counts = btf.find("proto_count", Kind.STRUCT)
    assert counts is not None
    assert btf.codec(counts.id).dtype.names == ("packets", "bytes")
    l3 = btf.find("l3_proto", Kind.ENUM)
    assert l3 is not None and dict(l3.enumerators)["L3_ARP"] == 2


def test_record_classes_are_frozen_dataclasses_even_with_awkward_field_names():
    import dataclasses

    from bpfscope.btf import frozen_record

    record = frozen_record("event", ["self", "fields", "pid"])
    a, b = record(1, 2, 3), record(self=1, fields=2, pid=3)
    assert a == b and hash(a) == hash(b) and repr(a) == "event(self=1, fields=2, pid=3)"
    assert dataclasses.is_dataclass(a) and [f.name for f in dataclasses.fields(a)] == ["self", "fields", "pid"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.pid = 4
