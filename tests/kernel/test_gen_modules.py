"""Every program the project ships, through the module `bpfscope gen` writes for it, on the real
kernel: generated, imported, loaded (nothing attached), its maps and rings read as the module's
types; map_types and ringbuf_events used for real through test_run; and mypy --strict over all of
the generated code."""

from __future__ import annotations

import dataclasses
import enum
import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import bpfscope
from bpfscope._gen import generate
from bpfscope.build import find_clang
from bpfscope.errors import BpfscopeError, VerifierError
from bpfscope.maps import ArrayMap, Map, MapOfMaps, MapType, ProgramArray, possible_cpus
from bpfscope.perfbuf import PerfBuffer
from bpfscope.program import XdpAction
from bpfscope.typed import TypedMap, TypedPerCpuMap, TypedPerfBuffer, TypedRingBuffer, Variables

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(
    path
    for pattern in ("src/bpfscope/tools/*.bpf.c", "src/bpfscope/benchmarks/*.bpf.c", "tests/bpf/*.bpf.c",
                    "examples/agent/*.bpf.c")
    for path in ROOT.glob(pattern)
)
NAMES = [path.name.removesuffix(".bpf.c") for path in SOURCES]
PACKET = bytes(64)

# What an object needs before it loads here; everything else loads as it is.
_LOCAL_STORAGE = (MapType.SK_STORAGE, MapType.INODE_STORAGE, MapType.TASK_STORAGE, MapType.CGRP_STORAGE)

PREPARE: dict[str, Callable[[Any], None]] = {
    # Its one program is there to be rejected (tests/kernel/test_objects.py); its map still loads.
    "verifier_reject": lambda spec: setattr(spec.programs.unchecked_lookup, "autoload", False),
    # Programs that load only with a target set, or that some kernels refuse (this one: fentry, fmod_ret, the
    # BPF LSM and the map-element iterator, EPERM); tests/kernel/test_attach_*.py load them where they can. The
    # types of their objects' maps are what is checked here.
    "attach_freplace": lambda spec: setattr(spec.programs.drop_instead, "autoload", False),
    "attach_iter": lambda spec: setattr(spec.programs.dump_values, "autoload", False),
    "attach_trampolines": lambda spec: [setattr(program, "autoload", False) for program in (
        spec.programs.count_fentry, spec.programs.count_fexit, spec.programs.count_fmod_ret,
        spec.programs.count_socket_create)],
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        find_clang()
    except BpfscopeError as exc:
        pytest.skip(str(exc))
    directory = tmp_path_factory.mktemp("generated")
    for source, name in zip(SOURCES, NAMES):
        generate(source, directory / f"{name}.py")
    return directory


def _import(directory: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The generated module, from its file (dataclasses look the module up while it runs)."""
    spec = importlib.util.spec_from_file_location(name, directory / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def _object_class(module: ModuleType, name: str) -> Any:
    return getattr(module, "".join(word[:1].upper() + word[1:] for word in name.split("_")))


def _is_generated(value: object, module: ModuleType) -> bool:
    """Whether every struct and enum in `value` is an instance of the module's own classes."""
    if isinstance(value, tuple):
        return all(_is_generated(item, module) for item in value)
    if dataclasses.is_dataclass(value):
        return type(value).__module__ == module.__name__ and all(
            _is_generated(getattr(value, field.name), module) for field in dataclasses.fields(value))
    if isinstance(value, enum.Enum):
        return type(value).__module__ == module.__name__
    return True


def test_every_shipped_program_has_a_module() -> None:
    assert len(SOURCES) >= 20 and "map_types" in NAMES and "opensnoop" in NAMES and "signals" in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_loads_and_reads_through_its_generated_module(
    generated: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = _import(generated, name, monkeypatch)
    spec = _object_class(module, name).open()
    PREPARE.get(name, lambda spec: None)(spec)
    with spec.load() as obj:
        maps = vars(obj.maps)
        assert set(maps) == {map_name for map_name in obj.object.maps
                             if "." not in map_name and not map_name.startswith("__bpf_")}  # libbpf's own
        for map_name, typed in maps.items():
            if isinstance(typed, Map):  # a buffer, read through obj.rings, or values that are programs or maps
                assert typed.type in (MapType.RINGBUF, MapType.PERF_EVENT_ARRAY, MapType.PROG_ARRAY,
                                      MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS, MapType.STRUCT_OPS)
                continue
            assert isinstance(typed, (TypedMap, TypedPerCpuMap))
            if typed.map.type in _LOCAL_STORAGE:
                continue  # keyed by a task, socket, inode or cgroup: read one by its fd, never iterated
            keys, values = typed.lookup_batch()
            assert keys.dtype == typed.map.key.dtype and len(keys) == len(values)
            entries = typed.items()
            if isinstance(typed.map, ArrayMap):
                assert len(entries) == typed.map.max_entries
                entries.append((0, typed[0]))
            assert all(_is_generated(key, module) and _is_generated(value, module) for key, value in entries), (
                map_name)
        for ring_name, attribute in vars(type(obj.rings)).items():
            if isinstance(attribute, property):
                reader = getattr(obj.rings, ring_name)
                assert isinstance(reader, (TypedRingBuffer, TypedPerfBuffer))
                assert len(reader.drain()) == 0 and reader.lost == 0
        for section in (value for value in vars(obj).values() if isinstance(value, Variables)):
            variables = [name for name in vars(type(section)) if not name.startswith("__")]
            assert all(_is_generated(getattr(section, name), module) for name in variables)
        programs = [attribute for attribute, member in vars(type(obj.programs)).items() if isinstance(member, property)]
        assert sorted(programs) == sorted(spec.spec.programs)
        for program in programs:
            if spec.spec.programs[program].autoload:
                assert getattr(obj.programs, program).fd >= 0


def test_a_program_the_verifier_rejects_fails_to_load(generated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _import(generated, "verifier_reject", monkeypatch)
    with pytest.raises(VerifierError, match="unchecked_lookup"):
        module.VerifierReject.load()
    spec = module.VerifierReject.open()
    spec.programs.unchecked_lookup.autoload = False
    with spec.load() as obj, pytest.raises(BpfscopeError, match="autoload was off"):
        _ = obj.programs.unchecked_lookup


def test_map_types_run_and_read_as_generated_classes(generated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _import(generated, "map_types", monkeypatch)
    with module.MapTypes.load(cfg_increment=3) as obj:
        assert obj.config.cfg_increment == 3
        for _ in range(5):
            assert obj.programs.bump_counters.test_run(PACKET).action == XdpAction.PASS
        assert obj.maps.per_cpu_small.sum(0) == 15  # each run adds cfg_increment on its CPU

        key = module.TestFlowKey(saddr=0x0A000001, sport=443, proto=6)
        value = module.FlowCounters(packets=2, bytes=120, comm=b"curl", delta=-5,
                                    state=module.TestFlowState.TEST_FLOW_ESTABLISHED)
        flows = obj.maps.flows
        flows[key] = value
        found = flows[key]
        assert found == value and type(found) is module.FlowCounters
        assert found.state is module.TestFlowState.TEST_FLOW_ESTABLISHED
        assert flows.items() == [(key, value)] and key in flows
        keys, values = flows.lookup_batch()
        assert keys.dtype == module.TEST_FLOW_KEY_DTYPE and values.dtype == module.FLOW_COUNTERS_DTYPE
        assert (keys["sport"].tolist(), values["comm"].tolist()) == ([443], [b"curl"])
        del flows[key]
        assert key not in flows and flows.lookup(key) is None

        cpus = possible_cpus()
        obj.maps.per_cpu_flows[1] = value
        assert obj.maps.per_cpu_flows[1] == (value,) * cpus
        assert obj.maps.per_cpu_flows.sum(1).packets == 2 * cpus

        obj.maps.prefixes[module.LpmV4Key(prefixlen=24, addr=(10, 1, 2, 0))] = 7
        assert obj.maps.prefixes.lookup(module.LpmV4Key(prefixlen=32, addr=(10, 1, 2, 99))) == 7
        assert obj.maps.prefixes.lookup(module.LpmV4Key(prefixlen=32, addr=(10, 1, 3, 1))) is None


def test_ringbuf_events_arrive_as_the_generated_event_class(
    generated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = _import(generated, "ringbuf_events", monkeypatch)
    with module.RingbufEvents.load(cfg_per_run=4) as obj:
        for _ in range(2):
            obj.programs.emit_events.test_run(PACKET)
        with obj.rings.events as events:
            records = list(events.records(timeout_ms=0))
        assert [type(record) for record in records] == [module.TestEvent] * 8
        assert [record.seq for record in records] == list(range(8))
        assert {(record.magic, record.tag) for record in records} == {(0xB0F5C0DE, b"bpfscop")}
        assert events.received == 8 and events.lost == 0
        # The `with` closed that reader; the next access makes a new one, kept until the object closes.
        assert events.closed and obj.rings.events is not events and obj.rings.events is obj.rings.events
        obj.programs.emit_wide.test_run(PACKET)
        batch = obj.rings.wide_events.poll(timeout_ms=0)
        assert batch.dtype == module.WIDE_EVENT_DTYPE and batch["seq"].tolist() == [8, 9, 10, 11]


def test_nested_values_go_into_the_kernel_and_come_back(generated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    packets = _import(generated, "packets", monkeypatch)
    counts = packets.PacketCounts(l3=tuple(packets.ProtoCount(packets=n, bytes=10 * n) for n in range(4)),
                                  l4=(packets.ProtoCount(packets=0, bytes=0),) * 4)
    cpus = possible_cpus()
    with packets.Packets.load() as obj:
        obj.maps.counts[0] = counts  # arrays of structs, on every CPU
        assert obj.maps.counts[0] == (counts,) * cpus
        assert obj.maps.counts.sum(0).l3[3] == packets.ProtoCount(packets=3 * cpus, bytes=30 * cpus)
    guard = _import(generated, "guard", monkeypatch)
    source = guard.Cidr(prefixlen=128, addr=tuple(range(16)))
    with guard.Guard.load() as obj:
        obj.maps.sources[source] = guard.SourceState(tat=1, passed=2, dropped=3)
        assert obj.maps.sources.items() == [(source, guard.SourceState(tat=1, passed=2, dropped=3))]
        assert obj.maps.sources.delete(source) and len(obj.maps.sources) == 0


def test_globals_read_and_write_through_the_generated_attributes(
    generated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = _import(generated, "globals", monkeypatch)
    with module.Globals.load(cfg_scale=2) as obj:
        obj.programs.count_runs.test_run(PACKET, repeat=10)
        assert (obj.bss.runs, obj.bss.total) == (10, 20)
        assert obj.bss.stats == module.RunStats(packets=10, bytes=10 * len(PACKET))
        obj.data.step = 5
        obj.data_custom.verdict = int(XdpAction.DROP)
        assert obj.programs.count_runs.test_run(PACKET).action == XdpAction.DROP
        assert obj.bss.total == 30 and obj.data.label == b"start"


def test_jump_tables_and_maps_of_maps_through_the_generated_module(
    generated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tail_calls = _import(generated, "tail_calls", monkeypatch)
    with tail_calls.TailCalls.load() as obj:
        assert isinstance(obj.maps.jumps, ProgramArray)
        obj.maps.jumps[1] = obj.programs.step_two
        assert obj.programs.dispatch.test_run(PACKET, repeat=3).action == XdpAction.PASS
        assert obj.maps.steps[2] == 3
    nested = _import(generated, "nested_maps", monkeypatch)
    with nested.NestedMaps.load() as obj:
        assert isinstance(obj.maps.by_tenant, MapOfMaps) and obj.maps.by_tenant.inner_template is not None
        with obj.maps.by_tenant.inner_template.create() as tenant:
            obj.maps.by_tenant[obj.config.cfg_tenant] = tenant
            obj.programs.count_inner.test_run(PACKET, repeat=4)
            assert tenant.items() == [(2, 4)]


def test_perf_buffer_samples_arrive_as_the_generated_classes(
    generated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = _import(generated, "perfbuf_events", monkeypatch)
    with module.PerfbufEvents.load(cfg_per_run=3) as obj:
        samples = obj.rings.samples  # a perf buffer gets samples from when its reader opens
        obj.programs.emit_samples.test_run(PACKET, repeat=2)
        records = list(samples.records(timeout_ms=0))
        assert [type(record) for record in records] == [module.TestSample] * 6
        assert sorted(record.seq for record in records) == list(range(6))
    # getpid_sample reaches the BTF through a function's signature only: --type makes a class of it.
    typed = generate(ROOT / "tests/bpf/perfbuf_events.bpf.c", tmp_path / "perfbuf_typed.py", types=["getpid_sample"])
    module = _import(tmp_path, typed.stem, monkeypatch)
    with module.PerfbufEvents.load(cfg_tgid=os.getpid()) as obj, \
            PerfBuffer(obj.object.maps["getpids"], record=obj.object.btf.struct("getpid_sample")) as getpids, \
            obj.programs.trace_getpid.attach_tracepoint("syscalls", "sys_enter_getpid"):
        for _ in range(5):
            os.getpid()
        records = list(getpids.records(timeout_ms=20))
    assert [type(record) for record in records] == [module.GetpidSample] * 5
    assert sorted(record.seq for record in records) == [1, 2, 3, 4, 5]


@pytest.mark.slow
def test_mypy_strict_accepts_every_generated_module_and_stub(generated: Path, tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    # The .py files alone (no stub beside them), then the stubs: both must pass --strict.
    sources = tmp_path / "sources"
    sources.mkdir()
    for name in NAMES:
        (sources / f"{name}.py").write_text((generated / f"{name}.py").read_text())
    env = {**os.environ, "MYPYPATH": str(Path(bpfscope.__file__).parents[1])}  # bpfscope has no py.typed
    for directory, suffix in ((sources, ".py"), (generated, ".pyi")):
        files = [str(directory / f"{name}{suffix}") for name in NAMES]
        result = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", *files],
                                capture_output=True, text=True, cwd=directory, env=env, check=False)
        assert result.returncode == 0, result.stdout
