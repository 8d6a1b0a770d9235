"""An opened object, before anything reaches the kernel: no root needed."""

from __future__ import annotations

import pytest

from bpfscope import features
from bpfscope.errors import NotSupportedError
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


@pytest.mark.parametrize("has_loop", [True, False])
def test_pick_loop_variants_keeps_one_of_each_pair(monkeypatch: pytest.MonkeyPatch, has_loop: bool) -> None:
    answer = None if has_loop else NotSupportedError("bpf_loop", "test")
    monkeypatch.setattr(features, "probe", lambda feature: answer if feature is features.Feature.BPF_LOOP else None)
    spec = ObjectSpec.open(tool_object("ringbuf_bench"))
    assert spec.pick_loop_variants() is has_loop
    assert spec.programs["fill_ring"].autoload is has_loop
    assert spec.programs["fill_ring_noloop"].autoload is not has_loop
    spec.close()


def test_pick_loop_variants_turns_nothing_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features, "probe", lambda feature: None)
    spec = ObjectSpec.open(tool_object("ringbuf_bench"))
    spec.programs["fill_ring"].autoload = False
    spec.pick_loop_variants()
    assert not spec.programs["fill_ring"].autoload and not spec.programs["fill_ring_noloop"].autoload
    spec.close()
