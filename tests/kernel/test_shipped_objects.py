"""Every BPF object the package ships for this machine's architecture loads on this kernel: the verifier
accepts each program, libbpf resolves the CO-RE relocations against the kernel's BTF, the maps are
created, and closing the object leaves no fd behind. Run in the vmtest guests, this is what proves the
objects of an architecture (aarch64 in an arm64 guest) on each kernel, one test per object."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

import bpfscope.object
import bpfscope.tools
from bpfscope import variants
from bpfscope.features import Feature, probe
from bpfscope.object import ObjectSpec, tool_object
from bpfscope.testing.plugin import bpf_fds
from bpfscope.tools import _registry

ARCH = platform.machine()
# Where tool_object() looks: the package's _bpf/<uname -m>/ folder.
SHIPPED = bpfscope.object._PACKAGE_OBJECTS / ARCH
PACKAGE = Path(bpfscope.tools.__file__).parent.parent
NAMES = sorted(p.name.removesuffix(".bpf.o") for p in SHIPPED.glob("*.bpf.o"))
# Objects with programs shipped in two forms: each tool declares its own (Tool.VARIANT), VARIANTS the rest.
TWO_FORMS = {**variants.VARIANTS, **{tool.NAME: tool.VARIANT for tool in _registry.all_tools() if tool.VARIANT}}


def test_the_package_ships_an_object_for_each_source() -> None:
    """Guards the parametrization below: no objects would mean no load tests, not a pass."""
    assert NAMES, f"no objects for {ARCH} in {SHIPPED}: run `make bpf`"
    sources = {p.name.removesuffix(".bpf.c") for folder in ("tools", "benchmarks")
               for p in (PACKAGE / folder).glob("*.bpf.c")}  # fmt: skip
    assert "packets" in sources, f"no tool sources under {PACKAGE}"
    assert sources <= set(NAMES), f"sources without a {ARCH} object: {sorted(sources - set(NAMES))}"


def _skip_unless_the_kernel_has_what_the_tool_needs(name: str) -> None:
    """A tool whose declared needs include a kernel feature this kernel lacks (syscount's task storage
    before 5.11, oomkill's bpf_task_from_pid before 6.2) says so in one line instead of loading: its object
    is not expected to load here. A group with an alternative that is not a probed feature is not judged."""
    tool = next((tool for tool in _registry.all_tools() if tool.NAME == name), None)
    keys = {feature.key: feature for feature in Feature}
    for group in tool.NEEDS if tool else ():
        if all(key in keys for key in group):
            missing = [probe(keys[key]) for key in group]
            if all(missing):
                pytest.skip(str(missing[0]))


@pytest.mark.parametrize("name", NAMES)
def test_shipped_object_loads(name: str) -> None:
    # The tools configure .rodata and ring sizes before load, and turn off the programs whose hook this
    # kernel lacks (opensnoop's sys_exit_open on arm64, which has no open(2)); loading is independent of
    # the hook existing, so every program is loaded here with the defaults compiled in: a superset. Of a
    # program shipped in two forms (bpfscope.variants) only the one this kernel can load is loaded.
    _skip_unless_the_kernel_has_what_the_tool_needs(name)
    before = bpf_fds()
    spec = ObjectSpec.open(tool_object(name))
    maps = set(spec.maps)
    assert all(p.autoload for p in spec.programs.values()), "a program marked autoload off in the object"
    variants.choose(spec, TWO_FORMS.get(name, name))
    programs = {p.name for p in spec.programs.values() if p.autoload}
    assert programs or maps, f"{name} holds neither programs nor maps"
    with spec.load() as obj:
        assert set(obj.programs) == programs
        assert set(obj.maps) == maps
        for program in obj.programs.values():
            assert program.fd >= 0, program.name
        for bpf_map in obj.maps.values():
            assert bpf_map.fd >= 0, bpf_map.name
    assert obj.closed
    after = bpf_fds()
    assert after == before, f"{name} left fds open: {sorted(set(after.items()) - set(before.items()))}"


@pytest.mark.parametrize("name", sorted(set(TWO_FORMS) & set(NAMES)))
def test_stand_ins_load_on_this_kernel_too(name: str) -> None:
    """The forms shipped for older kernels (bpfscope.variants) verify here as well, whatever this has."""
    spec = ObjectSpec.open(tool_object(name))
    instead = set(TWO_FORMS[name].instead) & set(spec.programs)
    assert instead, f"{name} ships none of its stand-ins"
    for program_name, program in spec.programs.items():
        program.autoload = program_name in instead
    with spec.load() as obj:
        assert set(obj.programs) == instead
