"""Kernel tracing hooks: raw_tp and tp_btf; kprobes, kretprobes, syscall kprobes and multi-kprobes;
fentry, fexit and fmod_ret; freplace onto another BPF program; BPF LSM hooks. Each counts exactly the
test's own calls, and nothing once its link is closed. Kinds this kernel lacks skip with the probe's
reason; the kernel matrix guests run them (make test-kernels)."""

from __future__ import annotations

import ctypes
import os
import platform
import socket
import subprocess
from collections.abc import Callable, Iterator
from typing import Optional

import pytest

from bpfscope import _libbpf
from bpfscope._attach import probes
from bpfscope.errors import BpfscopeError, NotSupportedError
from bpfscope.features import Feature
from bpfscope.object import Object, ObjectSpec
from bpfscope.program import Program
from tests.kernel.attach_support import hits, kill_9_leaves_nothing, links_of, one_line

COUNT = 25
# The kernel function behind getppid(2), as this architecture's syscall wrapper names it.
GETPPID = {"x86_64": "__x64_sys_getppid", "aarch64": "__arm64_sys_getppid"}[platform.machine()]
kprobes = pytest.mark.requires(Feature.KPROBES)
trampolines = pytest.mark.requires(Feature.FENTRY)


def skip_unless_present(probe: Callable[[], Optional[NotSupportedError]]) -> None:
    missing = probe()
    if missing is not None:
        pytest.skip(str(missing))


def loaded(path, *, wanted: Callable[[str], bool] = lambda name: True) -> Object:
    spec = ObjectSpec.open(path)
    spec.rodata["cfg_tgid"] = os.getpid()
    for name, program in spec.programs.items():
        program.autoload = wanted(name)
    return spec.load()


@pytest.fixture
def obj(test_object) -> Iterator[Object]:
    with loaded(test_object("attach_tracing")) as tracing:
        yield tracing


def getppid_calls(count: int = COUNT) -> None:
    for _ in range(count):
        os.getppid()


# --- raw_tp and tp_btf: on every kernel with BTF ---


def test_raw_tracepoint_counts_the_test_getppid_calls(obj):
    with obj.programs["count_raw_getppid"].attach_raw_tracepoint("sys_enter") as link:
        assert link.description == "raw tracepoint sys_enter"
        getppid_calls()
    getppid_calls(5)
    assert hits(obj, "RAW_TP") == COUNT


def test_raw_tracepoint_from_its_section(obj):
    with obj.programs["count_raw_getppid"].attach():
        getppid_calls()
    assert hits(obj, "RAW_TP") == COUNT


def test_tp_btf_counts_the_execs_of_the_test_children(obj):
    with obj.programs["count_child_exec"].attach_tracing():
        for _ in range(COUNT):
            subprocess.run(["true"], check=True)
    subprocess.run(["true"], check=True)
    assert hits(obj, "TP_BTF") == COUNT


def test_tp_btf_from_its_section(obj):
    with obj.programs["count_child_exec"].attach():
        for _ in range(COUNT):
            subprocess.run(["true"], check=True)
    assert hits(obj, "TP_BTF") == COUNT


def test_tracing_bad_input_is_one_line(obj):
    with pytest.raises(BpfscopeError, match="no tracepoint 'bpfscope_no_such_tracepoint'") as raw:
        obj.programs["count_raw_getppid"].attach_raw_tracepoint("bpfscope_no_such_tracepoint")
    with pytest.raises(BpfscopeError, match="attach_raw_tracepoint attaches raw_tracepoint") as wrong:
        obj.programs["count_child_exec"].attach_raw_tracepoint("sys_enter")
    with pytest.raises(BpfscopeError, match=r"attach it with attach_kprobe\(symbol\)") as auto:
        obj.programs["count_kprobe"].attach()
    for exc in (raw.value, wrong.value, auto.value):
        one_line(exc)
    assert links_of(obj.programs["count_raw_getppid"]) == []


# --- kprobes ---


@kprobes
@pytest.mark.parametrize("retprobe", [False, True])
def test_kprobe_on_the_getppid_syscall(obj, retprobe):
    program = obj.programs["count_kretprobe" if retprobe else "count_kprobe"]
    with program.attach_kprobe(GETPPID, retprobe=retprobe) as link:
        assert link.description == f"{'kretprobe' if retprobe else 'kprobe'} {GETPPID}"
        getppid_calls()
    getppid_calls(5)
    assert hits(obj, "KRETPROBE" if retprobe else "KPROBE") == COUNT


@kprobes
def test_kprobe_by_address(obj):
    with open("/proc/kallsyms") as f:
        address = next(int(line.split()[0], 16) for line in f if line.split()[2] == GETPPID)
    with obj.programs["count_kprobe"].attach_kprobe(address=address):
        getppid_calls()
    assert hits(obj, "KPROBE") == COUNT


@kprobes
def test_ksyscall_from_its_section(obj):
    with obj.programs["count_ksyscall"].attach():
        getppid_calls()
    assert hits(obj, "KSYSCALL") == COUNT


@kprobes
def test_kprobe_on_an_unknown_function_is_one_line(obj):
    with pytest.raises(BpfscopeError, match="no kernel function 'bpfscope_no_such_function'") as exc:
        obj.programs["count_kprobe"].attach_kprobe("bpfscope_no_such_function")
    one_line(exc.value)
    assert links_of(obj.programs["count_kprobe"]) == []


def test_kprobe_multi_by_pattern_and_by_name(obj):
    skip_unless_present(probes.kprobe_multi)
    program = obj.programs["count_kprobe_multi"]
    with program.attach_kprobe_multi(GETPPID.replace("getppid", "getpp*")) as link:
        assert "kprobe.multi" in link.description
        getppid_calls()
    with program.attach_kprobe_multi(symbols=[GETPPID]):
        getppid_calls()
    assert hits(obj, "KPROBE_MULTI") == 2 * COUNT
    with pytest.raises(BpfscopeError, match="no kernel function matches 'bpfscope_no_such_\\*'") as exc:
        program.attach_kprobe_multi("bpfscope_no_such_*")
    one_line(exc.value)
    assert links_of(program) == []


def test_kprobe_kinds_this_kernel_lacks_say_so_in_one_line(obj):
    if probes.kprobe_multi() is None:
        pytest.skip("this kernel has multi-kprobe links")
    with pytest.raises(NotSupportedError, match="multi-kprobe links") as exc:
        obj.programs["count_kprobe_multi"].attach_kprobe_multi("*")
    one_line(exc.value)


@kprobes
def test_kill_9_leaves_no_kprobe(test_object):
    kill_9_leaves_nothing(test_object("attach_tracing"),
                          f"link = obj.programs['count_kprobe'].attach_kprobe({GETPPID!r})")


def test_kill_9_leaves_no_raw_tracepoint_or_tp_btf(test_object):
    kill_9_leaves_nothing(test_object("attach_tracing"), "links = [obj.programs['count_raw_getppid'].attach(), "
                                                         "obj.programs['count_child_exec'].attach()]")


# --- trampolines: fentry, fexit, fmod_ret, BPF LSM, freplace ---


def run_tracing_program(program: Program, times: int) -> None:
    """BPF_PROG_TEST_RUN of an fentry/fexit (fmod_ret) program: the kernel calls bpf_fentry_test1..8
    (bpf_modify_return_test) once a run, which is what the attached programs trace."""
    for _ in range(times):
        opts = _libbpf.BpfTestRunOpts(sz=ctypes.sizeof(_libbpf.BpfTestRunOpts))
        _libbpf.check(_libbpf.bpf_prog_test_run_opts(program.fd, opts), f"test_run {program.name}")


def trampolines_loaded(test_object, *names: str) -> Object:
    """Only the programs named: kernels differ in which functions they let each kind hook (fmod_ret only
    error-injectable ones: Debian's 6.1 refuses bpf_modify_return_test)."""
    try:
        return loaded(test_object("attach_trampolines"), wanted=lambda name: name in names)
    except BpfscopeError as exc:
        pytest.skip(f"this kernel refuses {', '.join(names)}: {exc}")


@trampolines
def test_fentry_and_fexit(test_object):
    with trampolines_loaded(test_object, "count_fentry", "count_fexit") as obj:
        with obj.programs["count_fentry"].attach_tracing(), obj.programs["count_fexit"].attach():
            run_tracing_program(obj.programs["count_fentry"], COUNT)
        run_tracing_program(obj.programs["count_fentry"], 5)
        assert hits(obj, "FENTRY") == COUNT
        assert hits(obj, "FEXIT") == COUNT


@trampolines
def test_fmod_ret(test_object):
    with trampolines_loaded(test_object, "count_fmod_ret") as obj:
        with obj.programs["count_fmod_ret"].attach_tracing():
            run_tracing_program(obj.programs["count_fmod_ret"], COUNT)
        assert hits(obj, "FMOD_RET") == COUNT


@trampolines
def test_lsm_hook_counts_the_test_sockets(test_object):
    skip_unless_present(probes.bpf_lsm)
    with trampolines_loaded(test_object, "count_socket_create") as obj, \
            obj.programs["count_socket_create"].attach_lsm() as link:
        assert link.description == "lsm hook socket_create"
        for _ in range(COUNT):
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()
        link.close()
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()
        assert hits(obj, "LSM") == COUNT


def test_lsm_on_a_kernel_without_it_is_one_line(test_object):
    missing = probes.bpf_lsm()
    if missing is None:
        pytest.skip("this kernel has the BPF LSM")
    one_line(missing)
    assert "the BPF LSM" in str(missing)


@trampolines
def test_kill_9_leaves_no_trampoline(test_object):
    kill_9_leaves_nothing(test_object("attach_trampolines"), "link = obj.programs['count_fentry'].attach()",
                          configure="program.autoload = name == 'count_fentry'")


@pytest.fixture
def freplace_pair(test_object) -> Iterator[tuple[Object, Object]]:
    """The XDP program `decide` and, loaded against its global function verdict(), `drop_instead`."""
    path = test_object("attach_freplace")
    with load_only(path, "decide") as target:
        spec = ObjectSpec.open(path)
        spec.programs["decide"].autoload = False
        spec.programs["drop_instead"].set_attach_target("verdict", program=target.programs["decide"])
        try:
            replacement = spec.load()
        except BpfscopeError as exc:
            pytest.skip(f"this kernel refuses freplace programs: {exc}")
        with replacement:
            yield target, replacement


def load_only(path, name: str) -> Object:
    spec = ObjectSpec.open(path)
    for program_name, program in spec.programs.items():
        program.autoload = program_name == name
    return spec.load()


def test_freplace_replaces_a_function_of_another_program(freplace_pair):
    target, replacement = freplace_pair
    decide = target.programs["decide"]
    frame = bytes(64)
    assert decide.test_run(frame).retval == 2  # XDP_PASS
    with replacement.programs["drop_instead"].attach_freplace(decide, "verdict") as link:
        assert "freplace of verdict() in program 'decide'" in link.description
        results = [decide.test_run(frame).retval for _ in range(COUNT)]
    assert results == [1] * COUNT  # XDP_DROP
    assert decide.test_run(frame).retval == 2
    assert replacement.maps["replaced_calls"][0] == COUNT


def test_freplace_onto_the_target_given_at_load_and_bad_input(freplace_pair):
    target, replacement = freplace_pair
    program = replacement.programs["drop_instead"]
    with program.attach():
        assert target.programs["decide"].test_run(bytes(64)).retval == 1
    with pytest.raises(BpfscopeError, match="has no global function 'no_such_function'") as exc:
        program.attach_freplace(target.programs["decide"], "no_such_function")
    one_line(exc.value)
    assert links_of(program) == []


def test_freplace_without_a_target_at_load_is_one_line(test_object):
    spec = ObjectSpec.open(test_object("attach_freplace"))
    with pytest.raises(BpfscopeError) as exc:
        spec.load()
    one_line(exc.value)
