"""`bpfscope bench maps`: reading a whole 100,000-entry hash map. bpf_map_lookup_batch
(Map.lookup_batch) against walking it key by key (bpf_map_get_next_key + bpf_map_lookup_elem per
entry, Map._lookup_by_key), and against `bpftool map dump -j` where bpftool is installed."""

from __future__ import annotations

import ctypes
import errno
import shutil
import subprocess
import time
from typing import Any, Callable

import numpy as np

from .. import _libbpf
from ..errors import BpfscopeError
from ..maps import Map
from ..object import ObjectSpec, tool_object
from . import Figure, rounds

__all__ = ["run"]

_MAP = "flows"
_TARGET_ENTRIES = 100_000  # the 30 ms target is for a map this full


def _timed_ms(action: Callable[[], Any]) -> tuple[float, Any]:
    """One call's time, and what it returned (to check it)."""
    start = time.perf_counter_ns()
    result = action()
    return (time.perf_counter_ns() - start) / 1e6, result


def _dump_with_bpftool(command: list[str]) -> None:
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise BpfscopeError(errno.EIO, f"{' '.join(command)}: {lines[-1] if lines else done.returncode}")


def _entries(flows: Map, count: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """`count` distinct flows (10.x.y.z → 192.168.0.1, varied ports) and their counters."""
    index = np.arange(count, dtype=np.uint32)
    keys = np.zeros(count, dtype=flows.key.dtype)
    keys["saddr"] = 0x0A000000 | index
    keys["daddr"] = 0xC0A80001
    keys["sport"] = (index % 50_000 + 10_000).astype(np.uint16)
    keys["dport"] = 443
    keys["proto"] = 6
    values = np.zeros(count, dtype=flows.value.dtype)
    values["packets"] = index + 1
    values["bytes"] = (index + 1) * 1500
    return keys, values


def _syscall_only(flows: Map) -> Callable[[], int]:
    """One bpf_map_lookup_batch call for the whole map into buffers allocated beforehand: the
    kernel's share of a batch read, without numpy allocations or chunking."""
    keys = np.zeros(flows.max_entries, dtype=flows.key.dtype)
    values = np.zeros(flows.max_entries, dtype=flows.value.dtype)
    token = ctypes.create_string_buffer(flows.key_size)
    opts = _libbpf.BpfMapBatchOpts(sz=ctypes.sizeof(_libbpf.BpfMapBatchOpts))
    count = ctypes.c_uint32()

    def read() -> int:  # uses keys and values by name, so they live as long as it does
        count.value = flows.max_entries
        ret = _libbpf.bpf_map_lookup_batch(flows.fd, None, token, _libbpf.buffer_address(keys),
                                           _libbpf.buffer_address(values), ctypes.byref(count), opts)
        if ret != -errno.ENOENT:  # ENOENT: the walk reached the end of the map
            _libbpf.check(ret, f"batch lookup in map {flows.name!r}")
        return count.value

    return read


def _map_id(fd: int) -> int:
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("map_id:"):
                return int(line.split()[1])
    raise BpfscopeError(errno.ENOENT, f"no map_id in /proc/self/fdinfo/{fd}")


def run(*, entries: int = _TARGET_ENTRIES, runs: int = 5) -> list[Figure]:
    """Fills a hash map with `entries` flows in one update_batch and times whole-map reads in `runs`
    rounds, each round reading the map every way once (the per-key walk and bpftool, which are slow,
    in the first 3 rounds only), so a busy stretch of time lands on all of them; each figure is the
    median over its rounds, with their range."""
    spec = ObjectSpec.open(tool_object("maps_bench"))
    if spec.maps[_MAP].max_entries < entries:
        spec.maps[_MAP].max_entries = entries
    with spec.load() as obj:
        flows = obj.maps[_MAP]
        keys, values = _entries(flows, entries)
        fill_ms, _ = _timed_ms(lambda: flows.update_batch(keys, values))
        bpftool = shutil.which("bpftool")
        command = [bpftool, "map", "dump", "id", str(_map_id(flows.fd)), "-j"] if bpftool else []
        syscall_only = _syscall_only(flows)
        times: dict[str, list[float]] = {"batch": [], "syscall": [], "per_key": [], "bpftool": []}
        for round_ in range(runs):
            took, (read_keys, read_values) = _timed_ms(flows.lookup_batch)
            if len(read_keys) != entries or int(read_values["packets"].sum()) != int(values["packets"].sum()):
                raise BpfscopeError(errno.EIO, f"batch read returned {len(read_keys)} of {entries} entries")
            times["batch"].append(took)
            took, count = _timed_ms(syscall_only)
            if count != entries:
                raise BpfscopeError(errno.EIO, f"one batch lookup call returned {count} of {entries} entries")
            times["syscall"].append(took)
            if round_ < 3:
                took, (read_keys, _) = _timed_ms(flows._lookup_by_key)
                if len(read_keys) != entries:
                    raise BpfscopeError(errno.EIO, f"per-key read returned {len(read_keys)} of {entries} entries")
                times["per_key"].append(took)
                if command:
                    times["bpftool"].append(_timed_ms(lambda: _dump_with_bpftool(command))[0])

    batch_ms, batch_spread = rounds(times["batch"])
    syscall_ms, syscall_spread = rounds(times["syscall"])
    per_key_ms, per_key_spread = rounds(times["per_key"])
    size = f"{entries:,} entries"
    how = f"median of {runs} rounds (the per-key walk and bpftool: of {len(times['per_key'])}), range beside it"
    figures = [
        Figure(
            "maps", f"batch read, {size}", batch_ms, "ms", False,
            target=30.0 if entries == _TARGET_ENTRIES else None,
            reference="per-key read (get_next_key + lookup)", reference_value=per_key_ms,
            spread=batch_spread, reference_spread=per_key_spread,
            note=f"Map.lookup_batch into numpy; {how}; " + (
                "bpftool peer below" if command else "bpftool not installed: no peer figure"),
        ),
        Figure("maps", "batch read, the syscall alone", syscall_ms, "ms", False,
               reference="batch read", reference_value=batch_ms, spread=syscall_spread,
               reference_spread=batch_spread,
               note=f"one bpf_map_lookup_batch for the whole map into preallocated buffers; {how}"),
        Figure("maps", f"batch write, {size}", fill_ms, "ms", False,
               note="one Map.update_batch call, single run"),
    ]
    if times["bpftool"]:
        bpftool_ms, bpftool_spread = rounds(times["bpftool"])
        figures.append(Figure(
            "maps", f"bpftool map dump -j, {size}", bpftool_ms, "ms", False,
            reference="batch read", reference_value=batch_ms, spread=bpftool_spread,
            reference_spread=batch_spread, note=f"peer: exec bpftool, JSON to /dev/null; {how}",
        ))
    return figures
