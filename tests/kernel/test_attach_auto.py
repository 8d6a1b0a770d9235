"""Auto-attach, as libbpf's bpf_program__attach and a skeleton's attach do: Program.attach() from the
section name, Object.attach_all() for every program whose section names its target, and one line naming
the explicit method for a section that does not."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from bpfscope._attach import probes
from bpfscope.errors import BpfscopeError
from bpfscope.link import IterLink, LinkGroup
from bpfscope.object import Object, ObjectSpec
from tests.kernel.attach_support import hits, kill_9_leaves_nothing, links_of, one_line

COUNT = 25
NAMED = ["on_tracepoint", "on_raw_tp", "on_uprobe", "on_uretprobe", "on_uprobe_multi", "on_exec", "list_tgids"]
UNNAMED = {
    "pass_frames": r"attach_xdp\(iface\)",
    "pass_packets": r"attach_tc\(iface\)",
    "on_any_uprobe": r"attach_uprobe\(binary, symbol\)",
    "on_any_tracepoint": r"attach_tracepoint\(category, name\)",
    "allow_connect": r"attach_cgroup\(path\)",
    "keep_datagrams": r"attach_socket\(sock\)",
    "on_sample": r"attach_perf_event\(event=..., frequency= or period=\)",
}
MISSING = ["on_missing_tracepoint", "on_missing_function"]


def load_auto(path, *, missing: bool = False) -> Object:
    """The object without the programs whose target does not exist, and without the multi-uprobe where the
    kernel lacks them; or (missing=True) those programs and the tracepoint before them."""
    spec = ObjectSpec.open(path)
    spec.rodata["cfg_tgid"] = os.getpid()
    multi = probes.uprobe_multi() is None
    for name, program in spec.programs.items():
        if missing:
            program.autoload = name in (*MISSING, "on_tracepoint")
        else:
            program.autoload = name not in MISSING and (multi or name != "on_uprobe_multi")
    return spec.load()


@pytest.fixture
def obj(test_object) -> Iterator[Object]:
    with load_auto(test_object("attach_auto")) as loaded:
        yield loaded


def trigger() -> None:
    for _ in range(COUNT):
        os.getppid()
        subprocess.run(["true"], check=True)


def test_attach_all_attaches_what_names_its_target_and_closes_it_all(obj):
    expected = [name for name in NAMED if name in obj.programs]
    assert [name for name, program in obj.programs.items() if program.autoattaches] == expected
    with obj.attach_all() as group:
        assert isinstance(group, LinkGroup)
        assert len(group.links) == len(expected)
        trigger()
        iterator = next(link for link in group.links if isinstance(link, IterLink))
        assert os.getpid() in {int(tgid) for tgid in iterator.text().split()}
    trigger()  # all closed: nothing counted
    slots = ["TRACEPOINT", "RAW_TP", "UPROBE", "URETPROBE", "TP_BTF"]
    slots += ["UPROBE_MULTI"] if "on_uprobe_multi" in obj.programs else []
    assert {slot: hits(obj, slot) for slot in slots} == dict.fromkeys(slots, COUNT)
    for name in expected:
        assert links_of(obj.programs[name]) == []


@pytest.mark.parametrize("name", NAMED)
def test_each_named_section_attaches_alone(obj, name):
    if name not in obj.programs:
        pytest.skip(str(probes.uprobe_multi()))
    with obj.programs[name].attach() as link:
        assert obj.programs[name].section.partition("/")[0] in link.description


@pytest.mark.parametrize("name", sorted(UNNAMED))
def test_a_section_without_a_target_names_the_method_to_call(obj, name):
    program = obj.programs[name]
    assert not program.autoattaches
    with pytest.raises(BpfscopeError, match=f"cannot attach from its section alone: attach it with {UNNAMED[name]}") \
            as exc:
        program.attach()
    one_line(exc.value)
    assert links_of(program) == []


@pytest.mark.parametrize("name", MISSING)
def test_a_section_whose_target_does_not_exist_is_one_line(test_object, name):
    with load_auto(test_object("attach_auto"), missing=True) as obj:
        program = obj.programs[name]
        with pytest.raises(BpfscopeError, match="does not exist here") as exc:
            program.attach()
        one_line(exc.value)
        with pytest.raises(BpfscopeError, match="does not exist here"):
            obj.attach_all()  # leaves nothing: the tracepoint it attached first is closed again
        assert all(links_of(p) == [] for p in obj.programs.values())


def test_kill_9_leaves_nothing_attached(test_object):
    configure = f"program.autoload = name not in {MISSING!r}"
    if probes.uprobe_multi() is not None:
        configure = f"program.autoload = name not in {[*MISSING, 'on_uprobe_multi']!r}"
    kill_9_leaves_nothing(test_object("attach_auto"), "link = obj.attach_all()", configure=configure)
