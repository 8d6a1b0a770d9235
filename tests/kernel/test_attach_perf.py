"""Perf events beyond cpu-clock (Program.attach_perf_event): a software counter sampled every `period`
events in one task, on every CPU at a frequency, and hardware counters where the machine has a PMU."""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Iterator

import pytest

from bpfscope.errors import BpfscopeError, NotSupportedError
from bpfscope.object import Object, ObjectSpec
from bpfscope.program import HardwareEvent, SoftwareEvent, online_cpus
from tests.kernel.attach_support import hits, kill_9_leaves_nothing, one_line

PAGES = 500
PERIOD = 10


@pytest.fixture
def obj(test_object) -> Iterator[Object]:
    spec = ObjectSpec.open(test_object("attach_kinds"))
    spec.rodata["cfg_tgid"] = os.getpid()
    with spec.load() as loaded:
        yield loaded


def touch_fresh_pages(count: int) -> None:
    """`count` minor page faults: the first write to each page of a new anonymous mapping, in small pages
    (with transparent huge pages on, one fault could fill 512 of them)."""
    with mmap.mmap(-1, count * mmap.PAGESIZE) as memory:
        memory.madvise(mmap.MADV_NOHUGEPAGE)
        for page in range(count):
            memory[page * mmap.PAGESIZE] = 1


def test_page_faults_of_one_task_sampled_every_period(obj):
    with obj.programs["sample_faults"].attach_perf_event(event=SoftwareEvent.PAGE_FAULTS, period=PERIOD,
                                                         pid=os.getpid()) as group:
        assert len(group.links) == 1 and f"pid {os.getpid()}" in group.links[0].description
        touch_fresh_pages(PAGES)
    touch_fresh_pages(PAGES)  # detached
    samples, counter = hits(obj, "FAULT_SAMPLE"), obj.maps["seen"][1]
    # A sample each PERIOD faults of this thread, and each one read the counter at a multiple of PERIOD.
    assert (samples, counter % PERIOD) == (counter // PERIOD, 0)
    assert counter >= PAGES


def busy(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


def test_task_clock_of_one_task_at_a_frequency(obj):
    with obj.programs["count_tick"].attach_perf_event(event=SoftwareEvent.TASK_CLOCK, frequency=1000,
                                                      pid=os.getpid()) as group:
        assert group.description == "perf event task-clock count_tick at 1000 Hz"
        busy(0.3)
    ticks = hits(obj, "PERF_EVENT")
    busy(0.1)
    assert ticks > 0
    assert hits(obj, "PERF_EVENT") == ticks  # detached


def test_one_event_per_cpu_given(obj):
    with obj.programs["count_tick"].attach_perf_event(event=SoftwareEvent.CPU_CLOCK, cpus=online_cpus()[:1]) as group:
        assert [link.description for link in group.links] == [f"perf cpu-clock cpu {online_cpus()[0]}"]


def test_hardware_counter_where_there_is_a_pmu(obj):
    try:
        group = obj.programs["count_tick"].attach_perf_event(event=HardwareEvent.INSTRUCTIONS, period=1_000_000,
                                                             pid=os.getpid())
    except NotSupportedError as exc:
        one_line(exc)
        pytest.skip(str(exc))
    with group:
        busy(0.2)
    assert hits(obj, "PERF_EVENT") > 0


def test_bad_input_is_one_line(obj):
    with pytest.raises(BpfscopeError, match="by frequency= or by period=, not both") as both:
        obj.programs["sample_faults"].attach_perf_event(frequency=10, period=10)
    with pytest.raises(BpfscopeError, match=r"attach it with attach_tracepoint\(category, name\)") as tracepoint:
        obj.programs["count_any_getppid"].attach_perf_event(event=SoftwareEvent.PAGE_FAULTS)
    with pytest.raises(BpfscopeError, match="no process with pid") as no_process:
        obj.programs["sample_faults"].attach_perf_event(event=SoftwareEvent.PAGE_FAULTS, pid=2**22 + 1)
    with pytest.raises(BpfscopeError, match=r"attach it with attach_perf_event") as auto:
        obj.programs["sample_faults"].attach()
    for exc in (both.value, tracepoint.value, no_process.value, auto.value):
        one_line(exc)


def test_kill_9_leaves_nothing_attached(test_object):
    kill_9_leaves_nothing(test_object("attach_kinds"), "from bpfscope.program import SoftwareEvent\n"
                          "link = obj.programs['sample_faults'].attach_perf_event(event=SoftwareEvent.PAGE_FAULTS)")
