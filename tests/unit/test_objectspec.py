"""An opened object, before anything reaches the kernel: no root needed."""

from __future__ import annotations

from bpfscope.object import ObjectSpec, tool_object


def test_map_types_come_from_btf_before_load():
    spec = ObjectSpec.open(tool_object("packets"))
    counts = spec.maps["counts"]
    assert counts.key is not None and counts.key.dtype.itemsize == 4
    assert counts.value is not None and counts.value.dtype.names == ("l3", "l4")
    assert counts.value.dtype["l3"].shape == (4,)
    assert counts.value.dtype["l3"].base.names == ("packets", "bytes")
    assert counts.max_entries == 1
    spec.close()


def test_programs_are_listed_with_their_sections():
    spec = ObjectSpec.open(tool_object("packets"))
    assert {name: p.section for name, p in spec.programs.items()} == {"count_packets": "xdp"}
    assert spec.programs["count_packets"].autoload
    spec.close()
