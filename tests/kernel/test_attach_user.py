"""User-space probes: USDT probes (a semaphore-guarded probe of a C program the test builds) and
multi-uprobes (every libc function a pattern matches, in one link). Each counts exactly the calls the
test makes, and nothing once its link is closed."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bpfscope._attach import probes
from bpfscope.errors import BpfscopeError
from bpfscope.object import Object, ObjectSpec
from tests.kernel.attach_support import hits, kill_9_leaves_nothing, links_of, one_line

COUNT = 25

# A USDT probe bpfscope_test:tick(value) guarded by a semaphore, written out as <sys/sdt.h> writes one (so
# no systemtap headers are needed): a .note.stapsdt entry (the probe's address, the .stapsdt.base anchor,
# the semaphore's address, provider, name, argument) and the semaphore in .probes. `ticks N` says it is
# ready and waits for a line on stdin, then fires the probe N times with 1..N, each time only if a tracer
# holds the semaphore up, and prints how many it fired.
TICKS = r"""
#include <stdio.h>
#include <stdlib.h>

unsigned short bpfscope_test_tick_semaphore __attribute__((section(".probes"), used));

#define TICK(value) __asm__ __volatile__(                                                         \
	"990: nop\n"                                                                              \
	".pushsection .note.stapsdt,\"?\",\"note\"\n"                                            \
	".balign 4\n"                                                                             \
	".4byte 992f-991f, 994f-993f, 3\n"                                                        \
	"991: .asciz \"stapsdt\"\n"                                                               \
	"992: .balign 4\n"                                                                        \
	"993: .8byte 990b\n"                                                                      \
	".8byte _.stapsdt.base\n"                                                                 \
	".8byte bpfscope_test_tick_semaphore\n"                                                   \
	".asciz \"bpfscope_test\"\n"                                                              \
	".asciz \"tick\"\n"                                                                       \
	".asciz \"8@%0\"\n"                                                                       \
	"994: .balign 4\n"                                                                        \
	".popsection\n"                                                                           \
	".ifndef _.stapsdt.base\n"                                                                \
	".pushsection .stapsdt.base,\"aG\",\"progbits\",.stapsdt.base,comdat\n"                  \
	".weak _.stapsdt.base\n"                                                                  \
	".hidden _.stapsdt.base\n"                                                                \
	"_.stapsdt.base: .space 1\n"                                                              \
	".size _.stapsdt.base, 1\n"                                                               \
	".popsection\n"                                                                           \
	".endif\n"                                                                                \
	:: "r"((long)(value)))

int main(int argc, char **argv)
{
	int count = atoi(argv[1]), fired = 0;

	printf("ready\n");
	fflush(stdout);
	getchar();
	for (int i = 1; i <= count; i++) {
		if (*(volatile unsigned short *)&bpfscope_test_tick_semaphore) {
			TICK(i);
			fired++;
		}
	}
	printf("%d\n", fired);
	return 0;
}
"""


@pytest.fixture
def obj(test_object) -> Iterator[Object]:
    spec = ObjectSpec.open(test_object("attach_kinds"))
    spec.rodata["cfg_tgid"] = os.getpid()
    with spec.load() as loaded:
        yield loaded


@pytest.fixture(scope="module")
def ticks(build_c, tmp_path_factory) -> Path:
    return build_c(TICKS, tmp_path_factory.mktemp("usdt"), "ticks", "-O2")


def run_ticks(binary: Path, attach=None) -> int:
    """Runs `ticks COUNT`, attaching with attach(pid) while it waits; returns how many ticks it fired."""
    child = subprocess.Popen([str(binary), str(COUNT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"  # running, not being exec'd
        if attach is None:
            return int(child.communicate("\n", timeout=30)[0])
        with attach(child.pid):
            return int(child.communicate("\n", timeout=30)[0])
    finally:
        child.kill()
        child.wait()


def test_usdt_probe_with_a_semaphore(obj, ticks):
    program = obj.programs["count_ticks"]
    assert run_ticks(ticks) == 0  # nobody holds the semaphore up
    fired = run_ticks(ticks, lambda pid: program.attach_usdt(str(ticks), "bpfscope_test", "tick", pid=pid))
    assert fired == COUNT
    assert hits(obj, "USDT") == COUNT
    assert obj.maps["seen"][0] == COUNT * (COUNT + 1) // 2  # the argument of each: 1..COUNT
    assert run_ticks(ticks) == 0  # closed: the semaphore is down again


def test_usdt_probe_of_a_process_by_pid_alone(obj, ticks):
    program = obj.programs["count_ticks"]
    assert run_ticks(ticks, lambda pid: program.attach_usdt(None, "bpfscope_test", "tick", pid=pid)) == COUNT
    assert hits(obj, "USDT") == COUNT


def test_usdt_bad_input_is_one_line(obj, ticks):
    program = obj.programs["count_ticks"]
    with pytest.raises(BpfscopeError, match=f"no USDT probe bpfscope_test:no_such_probe in {ticks}") as name:
        program.attach_usdt(str(ticks), "bpfscope_test", "no_such_probe")
    with pytest.raises(BpfscopeError, match="no USDT probe no_such_provider:tick") as provider:
        program.attach_usdt(str(ticks), "no_such_provider", "tick")
    with pytest.raises(BpfscopeError, match="no binary or library at /nonexistent/ticks") as binary:
        program.attach_usdt("/nonexistent/ticks", "bpfscope_test", "tick")
    with pytest.raises(BpfscopeError, match="needs the binary or library, or pid=") as neither:
        program.attach_usdt(None, "bpfscope_test", "tick")
    with pytest.raises(BpfscopeError, match=r"attach it with attach_usdt\(binary, provider, name\)") as auto:
        program.attach()
    for exc in (name.value, provider.value, binary.value, neither.value, auto.value):
        one_line(exc)
    assert links_of(program) == []


def test_kill_9_leaves_no_usdt_probe(test_object, ticks):
    waiting = subprocess.Popen([str(ticks), str(COUNT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert waiting.stdout is not None and waiting.stdout.readline() == "ready\n"
        recipe = "link = obj.programs['count_ticks'].attach_usdt(sys.argv[2], 'bpfscope_test', 'tick', " \
                 "pid=int(sys.argv[3]))"
        kill_9_leaves_nothing(test_object("attach_kinds"), recipe, str(ticks), str(waiting.pid))
        assert int(waiting.communicate("\n", timeout=30)[0]) == 0  # its semaphore went down with the link
    finally:
        waiting.kill()
        waiting.wait()


# --- multi-uprobes ---


def skip_without_uprobe_multi() -> None:
    missing = probes.uprobe_multi()
    if missing is not None:
        pytest.skip(str(missing))


@pytest.mark.parametrize(("program", "retprobe", "hit"), [
    ("count_multi_entry", False, "UPROBE_MULTI"),
    ("count_multi_return", True, "URETPROBE_MULTI"),
])
def test_uprobe_multi_on_every_libc_function_a_pattern_matches(obj, program, retprobe, hit):
    skip_without_uprobe_multi()
    with obj.programs[program].attach_uprobe_multi("libc", "getpp*", retprobe=retprobe) as link:
        assert "(1 functions)" in link.description
        for _ in range(COUNT):
            os.getppid()
    os.getppid()
    assert hits(obj, hit) == COUNT


def test_uprobe_multi_on_several_functions(obj):
    skip_without_uprobe_multi()
    with obj.programs["count_multi_entry"].attach_uprobe_multi("libc", "getp[gp]id") as link:
        assert "(2 functions)" in link.description
        for _ in range(COUNT):
            os.getppid()
            os.getpgid(0)
    assert hits(obj, "UPROBE_MULTI") == 2 * COUNT


def test_uprobe_multi_bad_input_is_one_line(obj):
    skip_without_uprobe_multi()
    program = obj.programs["count_multi_entry"]
    with pytest.raises(BpfscopeError, match="no function in .*libc.* matches 'bpfscope_no_such_\\*'") as pattern:
        program.attach_uprobe_multi("libc", "bpfscope_no_such_*")
    with pytest.raises(BpfscopeError, match="was not loaded for multi-uprobes") as kind:
        obj.programs["count_entry"].attach_uprobe_multi("libc", "getppid")
    for exc in (pattern.value, kind.value):
        one_line(exc)
    assert links_of(program) == []


def test_kill_9_leaves_no_uprobe_multi(test_object):
    skip_without_uprobe_multi()
    kill_9_leaves_nothing(test_object("attach_kinds"),
                          "link = obj.programs['count_multi_entry'].attach_uprobe_multi('libc', 'getppid')")
