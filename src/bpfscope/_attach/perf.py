"""Perf events: a perf_event program on a software or hardware counter, sampled every `period` events or
`frequency` times a second, on each CPU or following one task. One perf event per CPU (or one for the
task), each attached by libbpf.

Tracepoints are perf events too, but a BPF program on one runs for every task and CPU whatever the event
was opened for (the kernel runs the tracepoint's programs before perf filters), so they are attached
with attach_tracepoint and filtered in the program."""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from typing import TYPE_CHECKING, Optional, Sequence, Union

from .. import _libbpf
from .._uapi import (
    NR_PERF_EVENT_OPEN,
    PERF_ATTR_FREQ,
    PERF_ATTR_SIZE_VER0,
    PERF_FLAG_FD_CLOEXEC,
    PERF_TYPE_HARDWARE,
    PERF_TYPE_SOFTWARE,
    HardwareEvent,
    ProgramType,
    SoftwareEvent,
)
from ..errors import BpfscopeError, NotSupportedError
from ..link import LibbpfLink, Link, LinkGroup
from . import TRACE, attached, describe, expect_type

if TYPE_CHECKING:
    from ..program import Program

__all__ = ["PerfEvent", "attach", "online_cpus"]

DEFAULT_FREQUENCY = 99  # samples a second: off the beat of timers that fire at round rates


PerfEvent = Union[HardwareEvent, SoftwareEvent]


def online_cpus() -> list[int]:
    """CPU numbers from /sys/devices/system/cpu/online ("0-3,6")."""
    with open("/sys/devices/system/cpu/online") as f:
        spec = f.read().strip()
    cpus: list[int] = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        cpus.extend(range(int(low), int(high or low) + 1))
    return cpus


def _attr(event: PerfEvent, frequency: Optional[int], period: Optional[int]) -> bytes:
    """struct perf_event_attr up to config1 (PERF_ATTR_SIZE_VER0), zero-padded to 128 bytes."""
    kind = PERF_TYPE_HARDWARE if isinstance(event, HardwareEvent) else PERF_TYPE_SOFTWARE
    config = int(event)
    sample, flags = (frequency, PERF_ATTR_FREQ) if frequency is not None else (period, 0)
    attr = struct.pack("=IIQQQQQII", kind, PERF_ATTR_SIZE_VER0, config, sample, 0, 0, flags, 0, 0)
    return attr.ljust(128, b"\0")


def _name(event: PerfEvent) -> str:
    return event.name.lower().replace("_", "-")


def _open(attr: bytes, event: PerfEvent, pid: int, cpu: int, where: str) -> int:
    fd = int(_libbpf._syscall(NR_PERF_EVENT_OPEN, attr, pid, cpu, -1, PERF_FLAG_FD_CLOEXEC))
    if fd >= 0:
        return fd
    err = ctypes.get_errno() or errno.EINVAL
    if isinstance(event, HardwareEvent) and err in (errno.ENOENT, errno.EOPNOTSUPP):
        raise NotSupportedError("hardware perf events", f"perf_event_open {_name(event)}: {os.strerror(err)} (no "
                                                        "hardware PMU here: a VM without a virtual PMU has none)")
    if err == errno.ESRCH:
        raise BpfscopeError(err, f"no process with pid {pid}")
    raise _libbpf.error(err, f"perf_event_open {_name(event)} {where}", TRACE)


def attach(program: Program, *, event: PerfEvent, frequency: Optional[int], period: Optional[int],
           cpus: Optional[Sequence[int]], pid: Optional[int], cookie: int) -> LinkGroup:
    if program.type is ProgramType.TRACEPOINT:
        raise BpfscopeError(errno.EINVAL, f"{describe(program)} is a tracepoint program: attach it with "
                                          "attach_tracepoint(category, name), and filter tasks and CPUs in the "
                                          "program (the kernel runs it for every one)")
    expect_type(program, "attach_perf_event", ProgramType.PERF_EVENT)
    if frequency is not None and period is not None:
        raise BpfscopeError(errno.EINVAL, "attach_perf_event samples by frequency= or by period=, not both")
    if frequency is None and period is None:
        frequency = DEFAULT_FREQUENCY
    attr = _attr(event, frequency, period)
    if pid is not None:
        targets = [(pid, cpu) for cpu in cpus] if cpus is not None else [(pid, -1)]
    else:
        targets = [(-1, cpu) for cpu in (cpus if cpus is not None else online_cpus())]
    opts = _libbpf.BpfTraceOpts(sz=ctypes.sizeof(_libbpf.BpfTraceOpts), cookie=cookie)
    links: list[Link] = []
    try:
        for task, cpu in targets:
            where = (f"pid {task}" if task >= 0 else "") + (" " if task >= 0 and cpu >= 0 else "") + \
                    (f"cpu {cpu}" if cpu >= 0 else "")
            pfd = _open(attr, event, task, cpu, where)
            with _libbpf.captured_log():
                ptr = _libbpf.bpf_program__attach_perf_event_opts(program._ptr, pfd, opts)
            if not ptr:
                err = ctypes.get_errno()
                os.close(pfd)
                ctypes.set_errno(err)
            links.append(LibbpfLink(attached(ptr, f"attach {program.name} to perf event {where}", TRACE),
                                    f"perf {_name(event)} {where}"))
    except BaseException:
        for link in links:
            link.close()
        raise
    rate = f" at {frequency} Hz" if frequency is not None else f" every {period}" if period else ""
    return LinkGroup(links, f"perf event {_name(event)} {program.name}{rate}")
