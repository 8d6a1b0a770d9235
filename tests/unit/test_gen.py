"""`bpfscope gen`: the module it writes is deterministic, named from the program, typed from BTF
(checked against bpfscope's own decoding, and by mypy), and `--check` catches a stale one. No root:
objects are compiled and opened, never loaded."""

from __future__ import annotations

import dataclasses
import enum
import importlib.util
import os
import py_compile
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import bpfscope
from bpfscope._gen import GenError, generate, render, stale
from bpfscope.build import find_clang
from bpfscope.cli.main import main
from bpfscope.errors import BpfscopeError, TypeMismatchError

SHAPES = r"""
/* Every kind of type gen writes Python for. */
#include "bpfscope.bpf.h"

enum mode { MODE_OFF = 0, MODE_FAST = 1, MODE_SAFE = 2 };

struct point {
	__s32 x;
	__s32 y;
};

typedef struct {
	__u16 lo;
	__u16 hi;
} range_t;

typedef struct {
	__u8 a;
	__u8 b;
} pair_t[2];

struct shape_key {
	__u32 id;
	char name[8];
};

struct shape {
	struct point corners[2];
	__u8 grid[2][3];
	char label[12];
	enum mode mode;
	bool visible;
	__u64 bytes;
	union {
		__u32 color;
		__u8 rgba[4];
	};
	struct {
		__u16 width;
		__u16 height;
	} size;
	range_t span;
	pair_t pairs;
	__u32 flags : 4, kind : 4;
};

struct odd {
	__u32 from;
	__u32 value;
};

struct shape_event {
	__u64 seq;
	struct point at;
	enum mode mode;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, struct shape_key);
	__type(value, struct shape);
} shapes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct point);
} points SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__uint(key_size, 4);
	__uint(value_size, 6);
} raw SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct odd);
} odds SEC(".maps");

DEFINE_RINGBUF(events, struct shape_event, 1 << 12);

const volatile __u32 cfg_limit = 10;
const volatile enum mode cfg_mode = MODE_FAST;
const volatile char cfg_tag[8] = "shape";
const volatile bool cfg_loud = false;
const volatile __u8 path = 1;	/* the name of load()'s first parameter */

SEC("xdp")
int draw_shapes(struct xdp_md *ctx)
{
	struct shape_event *event = RINGBUF_RESERVE(events);

	if (!event)
		return XDP_PASS;
	event->seq = cfg_limit + cfg_loud + cfg_tag[0] + path;
	event->at.x = 1;
	event->at.y = 2;
	event->mode = cfg_mode;
	bpf_ringbuf_submit(event, 0);
	return XDP_PASS;
}
"""

USES = """
from __future__ import annotations

from shape_demo import Mode, Point, ShapeDemo, ShapeEvent, ShapeKey


def use() -> list[ShapeEvent]:
    spec = ShapeDemo.open()
    spec.config.cfg_mode = Mode.MODE_SAFE
    spec.config.cfg_tag = b"tag"
    spec.maps.shapes.max_entries = 64
    spec.programs.draw_shapes.autoload = True
    with spec.load() as obj:
        key = ShapeKey(id=1, name=b"square")
        shape = obj.maps.shapes.lookup(key)
        width: int = shape.size.width if shape is not None else 0
        corners: tuple[Point, ...] = shape.corners if shape is not None else ()
        total: Point = obj.maps.points.sum(0)
        obj.maps.points[1] = Point(x=width, y=len(corners) + total.x)
        obj.programs.draw_shapes.test_run(bytes(64))
        return list(obj.rings.events.records(timeout_ms=0))
"""

MISUSES = """
from shape_demo import ShapeDemo, ShapeKey

with ShapeDemo.load(cfg_limit="ten") as obj:
    obj.maps.shapes.lookup(1)
    obj.maps.shapez
    key: ShapeKey = obj.maps.points.sum(0)
"""


@pytest.fixture
def source(tmp_path: Path) -> Path:
    try:
        find_clang()
    except BpfscopeError as exc:
        pytest.skip(str(exc))
    path = tmp_path / "shape_demo.bpf.c"
    path.write_text(SHAPES)
    return path


def _import(path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The generated module, imported from its file (dataclasses look the module up while it runs)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, path.stem, module)
    spec.loader.exec_module(module)
    return module


def test_writes_module_stub_and_object_beside_the_source(source: Path) -> None:
    module = generate(source)
    assert module == source.with_name("shape_demo.py")
    assert module.with_suffix(".pyi").is_file()
    assert source.with_name("shape_demo.bpf.o").is_file()


def test_output_is_deterministic_and_free_of_paths(source: Path, tmp_path: Path) -> None:
    first = generate(source)
    texts = (first.read_bytes(), first.with_suffix(".pyi").read_bytes())
    generate(source)
    assert (first.read_bytes(), first.with_suffix(".pyi").read_bytes()) == texts
    elsewhere = generate(source, tmp_path / "other" / "shape_demo.py")
    assert (elsewhere.read_bytes(), elsewhere.with_suffix(".pyi").read_bytes()) == texts
    text = texts[0].decode()
    assert str(tmp_path) not in text
    header = text.splitlines()[:2]
    assert header[0] == "# Code generated by bpfscope gen from shape_demo.bpf.c. DO NOT EDIT."
    import hashlib

    assert hashlib.sha256(SHAPES.encode()).hexdigest() in header[1]
    assert bpfscope.__version__ not in text  # a new bpfscope that generates the same text leaves modules fresh


def test_names_come_from_the_program(source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _import(generate(source), monkeypatch)
    assert module.__all__ == sorted(module.__all__)
    classes = {"ShapeDemo", "ShapeDemoSpec", "ShapeDemoConfig", "ShapeDemoPrograms", "ShapeDemoMaps",
               "ShapeDemoMapSpecs", "ShapeDemoRings", "Mode", "PairT", "Point", "RangeT", "Shape", "ShapeKey",
               "ShapeSize", "ShapeEvent"}
    dtypes = {"PAIR_T_DTYPE", "POINT_DTYPE", "RANGE_T_DTYPE", "SHAPE_DTYPE", "SHAPE_KEY_DTYPE", "SHAPE_SIZE_DTYPE",
              "SHAPE_EVENT_DTYPE", "ODD_DTYPE"}
    assert set(module.__all__) == classes | dtypes | {"OBJECT"}
    assert module.OBJECT == source.with_name("shape_demo.bpf.o")
    assert issubclass(module.Mode, enum.IntEnum) and module.Mode.MODE_SAFE == 2
    # `from` is a Python keyword: struct odd keeps bpfscope's records, and gets only its dtype.
    assert not hasattr(module, "Odd")
    fields = [f.name for f in dataclasses.fields(module.Shape)]
    # The anonymous union's members are flattened and the bitfields left out, as the dtype has them.
    assert fields == ["corners", "grid", "label", "mode", "visible", "bytes", "color", "rgba", "size", "span", "pairs"]
    assert list(module.SHAPE_DTYPE.names) == fields
    stub = source.with_name("shape_demo.pyi").read_text()
    assert "    bytes: int\n" in stub and "    label: builtins.bytes\n" in stub
    assert "    grid: tuple[tuple[int, ...], ...]\n" in stub
    assert "    mode: Mode | int\n" in stub
    assert "    corners: tuple[Point, ...]\n" in stub and "    pairs: tuple[PairT, ...]\n" in stub
    assert "    odds: TypedMap[int, Any]\n" in stub
    assert "    raw: TypedMap[int, bytes]\n" in stub
    assert "    points: TypedPerCpuMap[int, Point]\n" in stub
    assert "    def events(self) -> TypedRingBuffer[ShapeEvent]: ..." in stub
    assert "    cfg_tag: bytes\n" in stub and "    cfg_loud: bool\n" in stub
    assert "    path_: int\n" in stub and "path_: int | None = None," in stub


def test_types_match_bpfscopes_own_decoding(source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _import(generate(source), monkeypatch)
    spec = module.ShapeDemo.open()
    try:
        raw = spec.spec
        assert raw.maps["shapes"].key.dtype == module.SHAPE_KEY_DTYPE
        assert raw.maps["shapes"].value.dtype == module.SHAPE_DTYPE
        assert raw.maps["points"].value.dtype == module.POINT_DTYPE
        assert raw.maps["odds"].value.dtype == module.ODD_DTYPE
        # Knobs read back as the module's own classes: bind() made bpfscope decode into them.
        assert spec.config.cfg_mode is module.Mode.MODE_FAST
        assert (spec.config.cfg_limit, spec.config.cfg_tag, spec.config.cfg_loud) == (10, b"shape", False)
        spec.config.cfg_limit = 3
        assert raw.rodata["cfg_limit"] == 3
        codec = raw.maps["shapes"].value
        shape = codec.to_python(np.zeros(1, dtype=codec.dtype)[0])
        assert type(shape) is module.Shape
        assert type(shape.size) is module.ShapeSize and type(shape.corners[0]) is module.Point
        assert type(shape.span) is module.RangeT and type(shape.pairs[1]) is module.PairT
        assert shape.mode == 0 and shape.grid == ((0, 0, 0), (0, 0, 0))
    finally:
        spec.close()


def test_a_rebuilt_object_that_no_longer_fits_fails_at_open(
    source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = _import(generate(source), monkeypatch)
    source.write_text(SHAPES.replace("__s32 y;", "__s64 y;"))
    from bpfscope.build import compile_object

    compile_object(source, module.OBJECT)
    with pytest.raises(TypeMismatchError, match="run bpfscope gen again"):
        module.ShapeDemo.open()


def test_check_fails_once_a_struct_changes(source: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gen", str(source)]) == 0
    capsys.readouterr()
    assert main(["gen", "--check", str(source)]) == 0
    assert capsys.readouterr().err == ""
    source.write_text(SHAPES.replace("__s32 y;", "__s32 y;\n\t__s32 z;"))
    assert main(["gen", "--check", str(source)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert str(source.with_name("shape_demo.py")) in err and "stale" in err
    assert stale(source) == [source.with_name("shape_demo.py"), source.with_name("shape_demo.pyi")]


def test_check_names_a_missing_module(source: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gen", "--check", str(source)]) == 1
    assert "shape_demo.py and" in capsys.readouterr().err


def test_a_file_gen_did_not_write_is_left_alone(source: Path) -> None:
    handwritten = source.with_name("shape_demo.py")
    handwritten.write_text("print('mine')\n")
    with pytest.raises(GenError, match="did not write it"):
        generate(source)
    assert handwritten.read_text() == "print('mine')\n"


def test_errors_are_one_line_and_clang_shows_its_diagnostics(
    source: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source.write_text(SHAPES.replace("struct point at;", "struct nowhere at;"))
    assert main(["gen", str(source)]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "nowhere" in err  # clang's own diagnostics
    assert err.splitlines()[-1].startswith("bpfscope gen: clang could not compile")
    assert main(["gen", str(source), "-o", str(source.with_name("x.txt"))]) == 1
    assert capsys.readouterr().err == f"bpfscope gen: {source.with_name('x.txt')}: the module must be a .py file\n"


def test_render_needs_no_writable_source_directory(source: Path) -> None:
    obj = generate(source).with_name("shape_demo.bpf.o")
    module, stub = render(obj, source=source)
    assert module == source.with_name("shape_demo.py").read_text()
    assert stub == source.with_name("shape_demo.pyi").read_text()


def _mypy(tmp_path: Path, program: str) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("mypy")
    path = tmp_path / "program.py"
    path.write_text(program)
    # bpfscope's own source, since the installed package has no py.typed marker.
    env = {**os.environ, "MYPYPATH": os.pathsep.join([str(tmp_path), str(Path(bpfscope.__file__).parents[1])])}
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(path)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, check=False)


@pytest.mark.slow
def test_mypy_accepts_typed_use_and_rejects_misuse(source: Path, tmp_path: Path) -> None:
    generate(source)
    accepted = _mypy(tmp_path, USES)
    assert accepted.returncode == 0, accepted.stdout
    rejected = _mypy(tmp_path, MISUSES)
    assert rejected.returncode == 1, rejected.stdout
    errors = [line for line in rejected.stdout.splitlines() if ": error:" in line]
    assert [line.split(":")[1] for line in errors] == ["4", "5", "6", "7"], rejected.stdout
    assert 'incompatible type "str"; expected "int | None"' in errors[0]
    assert 'expected "ShapeKey"' in errors[1]
    assert 'has no attribute "shapez"' in errors[2]
    assert 'has type "Point", variable has type "ShapeKey"' in errors[3]


def test_static_locals_such_as_bpf_printk_formats_are_not_knobs(
    source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source.write_text(SHAPES + """
SEC("tracepoint/syscalls/sys_enter_getpid")
int say_hello(void *ctx)
{
	static const char greeting[] = "hello";

	bpf_printk("pid %d", bpf_get_current_pid_tgid() >> 32);
	return greeting[0] == 'h';
}
""")
    module = generate(source)
    py_compile.compile(str(module), doraise=True)
    py_compile.compile(str(module.with_suffix(".pyi")), cfile=str(module.with_name("stub.pyc")), doraise=True)
    demo = _import(module, monkeypatch)
    assert "cfg_limit" in vars(demo.ShapeDemoConfig) and not any("." in k for k in vars(demo.ShapeDemoConfig))


def test_a_refused_program_leaves_the_object_and_module_as_they_were(source: Path) -> None:
    module = generate(source)
    before = (module.read_bytes(), source.with_name("shape_demo.bpf.o").read_bytes())
    source.write_text(SHAPES + "\nconst volatile int __hidden = 1;\n")  # a knob name gen refuses
    with pytest.raises(BpfscopeError):
        generate(source)
    assert (module.read_bytes(), source.with_name("shape_demo.bpf.o").read_bytes()) == before


GLOBALS_AND_BUFFERS = r"""
struct only_in_a_signature {
	__u64 at;
};

struct only_local {
	__u32 left;
	__u32 right;
};

struct draw_sample {
	__u64 seq;
	struct point at;
};

__u64 drawn;
struct point last_point;
__u32 scale = 2;
__u32 tint SEC(".data.tint") = 7;

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, int (void *));
} jumps SEC(".maps");

struct inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct inner);
} tables SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} samples SEC(".maps");

BTF_EXPORT(struct draw_sample, samples);

static __noinline int stamp(struct only_in_a_signature *stamp)
{
	stamp->at = bpf_ktime_get_ns();
	return 0;
}

SEC("xdp")
int count_draws(struct xdp_md *ctx)
{
	static __u32 calls;
	struct only_in_a_signature now;
	struct only_local local = { .left = 1, .right = tint };

	stamp(&now);
	calls++;
	drawn += scale + calls + local.right;
	last_point.x = now.at;
	bpf_perf_event_output(ctx, &samples, BPF_F_CURRENT_CPU, &local, sizeof(local));
	bpf_tail_call(ctx, &jumps, 0);
	return XDP_PASS;
}
"""


def test_global_variables_become_typed_attributes_by_section(source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source.write_text(SHAPES + GLOBALS_AND_BUFFERS)
    module = _import(generate(source), monkeypatch)
    assert {"ShapeDemoBss", "ShapeDemoData", "ShapeDemoDataTint"} <= set(module.__all__)
    # Not BTF_EXPORT's pointer, nor count_draws's static local (count_draws.calls in the BTF).
    assert [name for name in vars(module.ShapeDemoBss) if not name.startswith("__")] == ["drawn", "last_point"]
    stub = source.with_name("shape_demo.pyi").read_text()
    assert "class ShapeDemoBss(Variables):" in stub
    assert "    drawn: int\n    last_point: Point\n" in stub
    assert "    scale: int\n" in stub and "    tint: int\n" in stub
    assert "    bss: ShapeDemoBss\n    data: ShapeDemoData\n    data_tint: ShapeDemoDataTint\n" in stub
    text = source.with_name("shape_demo.py").read_text()
    assert 'self.data_tint = ShapeDemoDataTint(obj.datasec(".data.tint"))' in text


def test_jump_tables_maps_of_maps_and_perf_buffers_get_their_own_classes(source: Path) -> None:
    source.write_text(SHAPES + GLOBALS_AND_BUFFERS)
    generate(source)
    stub = source.with_name("shape_demo.pyi").read_text()
    assert "    jumps: ProgramArray\n" in stub and "    tables: MapOfMaps\n" in stub and "    samples: Map\n" in stub
    assert "    def samples(self) -> TypedPerfBuffer[DrawSample]: ..." in stub
    text = source.with_name("shape_demo.py").read_text()
    assert 'self.jumps: ProgramArray = map_as(obj, "jumps", ProgramArray)' in text
    assert 'return self._perf_reader("samples", DRAW_SAMPLE_DTYPE)' in text


def test_type_makes_classes_of_types_no_map_or_global_uses(
    source: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source.write_text(SHAPES + GLOBALS_AND_BUFFERS)
    without = _import(generate(source), monkeypatch)
    assert not hasattr(without, "OnlyInASignature") and not hasattr(without, "OnlyLocal")
    assert main(["gen", str(source), "--type", "only_in_a_signature", "--type", "struct only_local"]) == 0
    monkeypatch.delitem(sys.modules, "shape_demo")
    module = _import(source.with_name("shape_demo.py"), monkeypatch)
    assert [f.name for f in dataclasses.fields(module.OnlyInASignature)] == ["at"]
    assert module.ONLY_LOCAL_DTYPE == np.dtype([("left", "<u4"), ("right", "<u4")])
    # A type only local variables have is not in what clang writes: gen's object carries it, as BTF_EXPORT would.
    spec = module.ShapeDemo.open()
    try:
        assert type(spec.spec.btf.struct("only_local").to_python(np.zeros(1, module.ONLY_LOCAL_DTYPE)[0])) is \
            module.OnlyLocal
        assert "__bpfscope_type_only_local" not in vars(module.ShapeDemoBss)
    finally:
        spec.close()
    capsys.readouterr()
    assert main(["gen", "--check", str(source), "--type", "only_in_a_signature", "--type", "struct only_local"]) == 0
    assert main(["gen", "--check", str(source)]) == 1
    assert "--type only_in_a_signature --type struct only_local" not in capsys.readouterr().err


@pytest.mark.parametrize(("name", "says"), [
    ("nowhere", "the program defines no such type"),
    ("typedef range_u", "the program defines no such type"),
    ("struct two words", "give a type's name"),
    ("cfg_limit", "the program defines no such type"),
])
def test_type_names_a_type_or_fails_in_one_line(
    source: Path, name: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["gen", str(source), "--type", name]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err
    assert not source.with_name("shape_demo.py").exists()
