"""Maps typed from BTF, read and written on the real kernel."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from bpfscope.errors import TypeMismatchError
from bpfscope.maps import ArrayMap, HashMap, LpmTrieMap, Map, PerCpuArrayMap, PerCpuHashMap, possible_cpus
from bpfscope.object import load


@pytest.fixture
def obj(test_object):
    with load(test_object("map_types")) as loaded:
        yield loaded


def test_map_classes_follow_map_types(obj):
    assert type(obj.maps["flows"]) is HashMap
    assert type(obj.maps["recent"]) is HashMap
    assert type(obj.maps["per_cpu_flows"]) is PerCpuHashMap
    assert type(obj.maps["per_cpu_small"]) is PerCpuArrayMap
    assert type(obj.maps["slots"]) is ArrayMap
    assert type(obj.maps["prefixes"]) is LpmTrieMap


def test_dtypes_come_from_btf_with_padding(obj):
    flows = obj.maps["flows"]
    assert flows.key.dtype.names == ("saddr", "sport", "proto")
    assert flows.key.dtype.itemsize == 8
    assert flows.key.dtype.fields["proto"][1] == 6
    assert flows.value.dtype.names == ("packets", "bytes", "comm", "state", "delta")
    assert flows.value.dtype["comm"] == np.dtype("S16")
    assert flows.value.dtype["delta"] == np.dtype("i4")


def test_single_values_are_plain_python(obj):
    flows = obj.maps["flows"]
    flows[{"saddr": 0x0A000001, "sport": 443, "proto": 6}] = {
        "packets": 3, "bytes": 180, "comm": b"curl", "state": 2, "delta": -5,
    }
    value = flows[{"saddr": 0x0A000001, "sport": 443, "proto": 6}]
    assert dataclasses.is_dataclass(value)
    assert (value.packets, value.bytes, value.comm, value.delta) == (3, 180, b"curl", -5)
    assert value.state.name == "TEST_FLOW_ESTABLISHED"
    assert type(value.comm) is bytes
    with pytest.raises(dataclasses.FrozenInstanceError):
        value.packets = 4
    assert flows.lookup({"saddr": 1, "sport": 1, "proto": 1}) is None
    with pytest.raises(KeyError):
        flows[{"saddr": 1, "sport": 1, "proto": 1}]


def test_set_get_delete_contains(obj):
    recent = obj.maps["recent"]
    recent[5] = 50
    assert 5 in recent and recent[5] == 50
    del recent[5]
    assert 5 not in recent
    with pytest.raises(KeyError):
        del recent[5]


def test_wrong_field_name_is_a_type_mismatch(obj):
    with pytest.raises(TypeMismatchError, match="no field 'port'"):
        obj.maps["flows"][{"saddr": 1, "port": 2}] = {"packets": 1}


def test_100k_entries_read_back_in_one_batch_equal_what_was_written(obj):
    flows = obj.maps["flows"]
    n = 100_000
    keys = np.zeros(n, dtype=flows.key.dtype)
    keys["saddr"] = np.arange(n, dtype=np.uint32) * 7 + 1
    keys["sport"] = np.arange(n) % 65536
    keys["proto"] = np.where(np.arange(n) % 2, 6, 17)
    values = np.zeros(n, dtype=flows.value.dtype)
    values["packets"] = np.arange(n)
    values["bytes"] = np.arange(n) * 1500
    values["comm"] = [f"p{i}".encode() for i in range(n)]
    flows.update_batch(keys, values)
    got_keys, got_values = flows.lookup_batch()
    assert len(got_keys) == n
    order = np.argsort(got_keys["saddr"])
    assert np.array_equal(got_keys[order], keys)
    assert np.array_equal(got_values[order], values)
    assert len(flows) == n
    # Read in two chunks: the joined keys keep their padding, so they work as keys again.
    assert got_keys.dtype.itemsize == flows.key_size
    flows.delete_batch(got_keys[:1000])
    assert len(flows) == n - 1000


def test_batch_and_per_key_reads_agree(obj):
    flows = obj.maps["flows"]
    for i in range(50):
        flows[{"saddr": i, "sport": i, "proto": 6}] = {"packets": i}
    batch_keys, batch_values = flows.lookup_batch()
    key_keys, key_values = flows._lookup_by_key()
    assert sorted(batch_keys.tolist()) == sorted(key_keys.tolist())
    assert sorted(batch_values["packets"].tolist()) == sorted(key_values["packets"].tolist())


def test_delete_batch_and_clear(obj):
    recent = obj.maps["recent"]
    recent.update_batch(list(range(100)), list(range(100)))
    recent.delete_batch(list(range(50)))
    assert sorted(recent.keys()) == list(range(50, 100))
    recent.clear()
    assert len(recent) == 0


def test_per_cpu_values_are_shaped_per_cpu_and_summed(obj):
    per_cpu = obj.maps["per_cpu_flows"]
    cpus = possible_cpus()
    per_cpu[1] = [{"packets": cpu + 1, "bytes": 10} for cpu in range(cpus)]
    row = per_cpu[1]
    assert len(row) == cpus and [v.packets for v in row] == list(range(1, cpus + 1))
    total = per_cpu.sum(1)
    assert total.packets == cpus * (cpus + 1) // 2 and total.bytes == 10 * cpus
    keys, values = per_cpu.lookup_batch()
    assert values.shape == (1, cpus)
    keys, summed = per_cpu.lookup_batch_sum()
    assert int(summed["packets"][0]) == total.packets


def test_per_cpu_slot_padding_for_4_byte_values(obj):
    small = obj.maps["per_cpu_small"]
    small[2] = 9  # one value for every CPU
    assert small[2] == (9,) * possible_cpus()
    keys, values = small.lookup_batch()
    assert keys.tolist() == [0, 1, 2, 3]
    assert values.dtype == np.dtype("u4") and values[2].tolist() == [9] * possible_cpus()


def test_array_has_every_index(obj):
    slots = obj.maps["slots"]
    assert len(slots) == 8
    slots[3] = 33
    keys, values = slots.lookup_batch()
    assert keys.tolist() == list(range(8)) and values[3] == 33


def test_lpm_trie_falls_back_to_per_key_reads(obj):
    prefixes = obj.maps["prefixes"]
    prefixes[{"prefixlen": 24, "addr": (10, 0, 0, 0)}] = 1
    prefixes[{"prefixlen": 16, "addr": (192, 168, 0, 0)}] = 2
    assert prefixes[{"prefixlen": 32, "addr": (10, 0, 0, 99)}] == 1  # longest prefix match
    keys, values = prefixes.lookup_batch()
    assert sorted(values.tolist()) == [1, 2]


def test_pin_reopen_and_unpin_keeps_types(obj, bpffs_dir):
    path = f"{bpffs_dir}/flows"
    flows = obj.maps["flows"]
    flows[{"saddr": 9, "sport": 9, "proto": 17}] = {"packets": 99, "comm": b"pinned"}
    flows.pin(path)
    with Map.from_pin(path) as reopened:
        assert reopened.key.dtype.names == ("saddr", "sport", "proto")
        value = reopened[{"saddr": 9, "sport": 9, "proto": 17}]
        assert (value.packets, value.comm) == (99, b"pinned")
    os.unlink(path)  # unpinning is deleting the file
    assert not os.path.exists(path)
