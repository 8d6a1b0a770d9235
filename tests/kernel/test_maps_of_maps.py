"""Maps of maps (ARRAY_OF_MAPS, HASH_OF_MAPS): inner maps declared as templates in BTF, created from
Python, put in, swapped and taken out while a program writes through them (BPF_PROG_TEST_RUN), and
read back typed."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from bpfscope import _libbpf
from bpfscope.btf import Btf
from bpfscope.errors import BpfscopeError
from bpfscope.maps import ArrayMap, HashMap, Map, MapOfMaps, MapType
from bpfscope.object import Object, load

PACKET = bytes(64)
TENANT = 7  # the key count_inner looks up in by_tenant (cfg_tenant)


@pytest.fixture
def obj(test_object) -> Iterator[Object]:
    with load(test_object("nested_maps")) as loaded:
        yield loaded


def map_id(m: Map) -> int:
    return int(_libbpf.obj_info(m.fd, _libbpf.BpfMapInfo(), m.name).id)


def count(obj: Object, times: int) -> None:
    obj.programs["count_inner"].test_run(PACKET, repeat=times)


def test_templates_come_from_the_declarations(obj: Object) -> None:
    by_slot, by_tenant = obj.maps["by_slot"], obj.maps["by_tenant"]
    assert isinstance(by_slot, MapOfMaps) and isinstance(by_tenant, MapOfMaps)
    assert by_slot.inner_template is not None and by_tenant.inner_template is not None
    assert (by_slot.inner_template.type, by_slot.inner_template.key_size, by_slot.inner_template.value_size,
            by_slot.inner_template.max_entries) == (MapType.ARRAY, 4, 8, 4)
    assert (by_tenant.inner_template.type, by_tenant.inner_template.max_entries) == (MapType.HASH, 16)


def test_the_inner_map_of_the_static_initialiser_counts(obj: Object) -> None:
    by_slot = obj.maps["by_slot"]
    assert by_slot.inner_id(0) == map_id(obj.maps["tally_a"])
    count(obj, 25)
    with by_slot[0] as inner:
        assert isinstance(inner, ArrayMap)
        assert inner.items() == [(0, 0), (1, 25), (2, 0), (3, 0)]


def test_swapping_the_inner_map_changes_which_one_the_program_writes(obj: Object) -> None:
    by_slot = obj.maps["by_slot"]
    assert by_slot.inner_template is not None
    with by_slot.inner_template.create(name="fresh") as fresh:
        by_slot[0] = fresh
        count(obj, 40)
        assert fresh[1] == 40
        by_slot[0] = obj.maps["tally_b"]
        count(obj, 3)
        by_slot[0] = fresh.fd  # a map's fd does as well
        count(obj, 2)
        assert fresh[1] == 42
    # the map of maps keeps `fresh` alive after its fd closed
    with by_slot[0] as inner:
        assert inner.name == "fresh" and inner[1] == 42
    assert obj.maps["tally_b"][1] == 3
    assert obj.maps["tally_a"][1] == 0


def test_a_hash_of_maps_takes_inner_maps_by_key(obj: Object) -> None:
    by_tenant = obj.maps["by_tenant"]
    assert by_tenant.inner_template is not None
    count(obj, 5)  # nothing at the key yet: nothing counted
    assert TENANT not in by_tenant and by_tenant.get(TENANT) is None
    with by_tenant.inner_template.create() as tenant:
        by_tenant[TENANT] = tenant
        count(obj, 9)
    assert TENANT in by_tenant
    with by_tenant[TENANT] as inner:
        assert isinstance(inner, HashMap)
        assert inner.items() == [(2, 9)]
        assert (inner.key.name, inner.value.name) == ("__u32", "__u64")  # typed by the object's BTF, in the kernel
    del by_tenant[TENANT]
    count(obj, 4)
    assert TENANT not in by_tenant and by_tenant.items() == []


def test_an_inner_map_without_kernel_btf_reads_typed_by_the_template(obj: Object) -> None:
    by_tenant = obj.maps["by_tenant"]
    template = by_tenant.inner_template
    assert template is not None and obj.btf.kernel_id
    untyped = dataclasses.replace(template, btf=Btf(_libbpf.kernel_btf(obj.btf.kernel_id)))  # not known as loaded
    with untyped.create() as tenant:
        assert _libbpf.obj_info(tenant.fd, _libbpf.BpfMapInfo(), "tenant").btf_id == 0
        by_tenant[TENANT] = tenant
        count(obj, 6)
    with by_tenant[TENANT] as inner:
        assert inner.items() == [(2, 6)]
        assert inner.value.name == "__u64"


def test_a_map_that_does_not_fit_the_template_is_refused_in_one_line(obj: Object) -> None:
    by_slot, by_tenant = obj.maps["by_slot"], obj.maps["by_tenant"]
    assert by_tenant.inner_template is not None
    with by_tenant.inner_template.create() as hash_map:  # by_slot holds arrays
        with pytest.raises(BpfscopeError, match="update map 'by_slot'") as raised:
            by_slot[1] = hash_map
    assert "\n" not in str(raised.value)
    assert 1 not in by_slot
