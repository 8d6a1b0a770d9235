"""`bpfscope bench xdp`: what the packets counter costs per packet, beside an empty XDP program and
the seed's counter (one u64 in a plain ARRAY map, shared by every CPU, __sync_fetch_and_add).

Every figure comes from BPF_PROG_TEST_RUN with a 64-byte UDP frame and a large `repeat`. The time
counted is the calling thread's CPU time divided by `repeat`: the kernel's own figure is whole
nanoseconds only, and the call's wall time also holds sleeps outside the loop (with repeat > 1 the
kernel swaps the program into the XDP dispatcher and waits for RCU grace periods, on entry and exit).
The CPU time that swap costs is measured per program and taken off."""

from __future__ import annotations

import errno
import os
import statistics
import struct
import threading
import time
from dataclasses import dataclass

from ..errors import BpfscopeError
from ..maps import PerCpuArrayMap
from ..object import Object, load, tool_object
from ..program import Program, XdpAction
from . import Figure, Rounds, rounds

__all__ = ["run", "udp_frame"]


def udp_frame(size: int = 64) -> bytes:
    """An Ethernet + IPv4 + UDP frame of `size` bytes (no FCS), 10.0.0.1:40000 → 10.0.0.2:53."""
    payload = bytes(size - 14 - 20 - 8)
    eth = bytes.fromhex("020000000002" "020000000001") + struct.pack("!H", 0x0800)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + len(payload), 0, 0x4000, 64, 17, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    checksum = sum(struct.unpack("!10H", ip))
    checksum = (checksum & 0xFFFF) + (checksum >> 16)
    checksum = ~((checksum & 0xFFFF) + (checksum >> 16)) & 0xFFFF
    ip = ip[:10] + struct.pack("!H", checksum) + ip[12:]
    udp = struct.pack("!HHHH", 40000, 53, 8 + len(payload), 0)
    return eth + ip + udp + payload


_PAIRED = ("ours", "shared", "per_cpu")
_OVERHEAD_CALLS = 5


@dataclass(frozen=True)
class _Sample:
    per_packet_ns: float  # thread CPU time / repeat
    kernel_ns: int  # the kernel's own average, truncated to whole nanoseconds


def _cpu_ns(program: Program, frame: bytes, repeat: int) -> tuple[int, int]:
    """The calling thread's CPU time for one test_run, and the kernel's figure."""
    start = time.thread_time_ns()
    result = program.test_run(frame, repeat=repeat)
    elapsed = time.thread_time_ns() - start
    if result.retval != XdpAction.PASS:
        raise BpfscopeError(errno.EIO, f"{program.name} returned {result.retval}, not XDP_PASS")
    return elapsed, result.duration_ns


def call_overhead_ns(program: Program, frame: bytes, *, calls: int = _OVERHEAD_CALLS) -> float:
    """CPU time one test_run call costs besides its packets, the median of `calls` with repeat=2:
    with repeat > 1 the kernel rebuilds the XDP dispatcher on entry and exit, some 0.5 ms here,
    which would otherwise add 0.5 ns to every packet of a million."""
    return statistics.median(_cpu_ns(program, frame, 2)[0] for _ in range(calls))


def _timed_run(program: Program, frame: bytes, repeat: int, overhead_ns: float) -> _Sample:
    elapsed, kernel_ns = _cpu_ns(program, frame, repeat)
    return _Sample((elapsed - overhead_ns) / repeat, kernel_ns)


def _together(program: Program, frame: bytes, repeat: int, overhead_ns: float, cpus: list[int]) -> _Sample:
    """One test_run per CPU in `cpus`, each from its own thread pinned there, released at once
    (ctypes lets go of the GIL for the syscall); the threads' mean."""
    barrier = threading.Barrier(len(cpus))
    results: list[_Sample] = []
    errors: list[BaseException] = []

    def work(cpu: int) -> None:
        try:
            os.sched_setaffinity(0, {cpu})  # this thread only
            barrier.wait()
            results.append(_timed_run(program, frame, repeat, overhead_ns))
        except BaseException as exc:
            barrier.abort()
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(cpu,)) for cpu in cpus]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)), errors[0])
    return _Sample(statistics.mean(s.per_packet_ns for s in results),
                   round(statistics.mean(s.kernel_ns for s in results)))


def run(*, repeat: int = 1_000_000, runs: int = 9, threads: bool = True) -> list[Figure]:
    """Times each program over `repeat` packets in `runs` rounds, medians over rounds. With
    `threads` (and two CPUs), each round also runs the counters in two threads on two CPUs at
    once, where the shared counter's cache line moves between them. Interleaving rounds puts a
    noisy stretch of time (a neighbour on the other CPU, the host) on every program alike."""
    frame = udp_frame()
    cpus = sorted(os.sched_getaffinity(0))[:2]
    paired = _PAIRED if threads and len(cpus) == 2 else ()
    with load(tool_object("xdp_bench")) as bench, load(tool_object("packets")) as packets:
        programs = {
            "empty": bench.programs["pass_packets"],
            "ours": packets.programs["count_packets"],
            "shared": bench.programs["count_shared"],
            "per_cpu": bench.programs["count_per_cpu"],
        }
        overhead = {key: call_overhead_ns(program, frame) for key, program in programs.items()}
        one: dict[str, list[_Sample]] = {key: [] for key in programs}
        two: dict[str, list[_Sample]] = {key: [] for key in paired}
        for _ in range(runs):
            for key, program in programs.items():
                one[key].append(_timed_run(program, frame, repeat, overhead[key]))
            for key in paired:
                two[key].append(_together(programs[key], frame, repeat, overhead[key], cpus))
        # Each counter saw its rounds (once alone, twice when paired) and the overhead calls.
        _check_counted(bench, packets, expected=repeat * runs * (3 if paired else 1) + 2 * _OVERHEAD_CALLS)
    overhead_us = statistics.median(overhead.values()) / 1e3
    return _figures(one, two, repeat=repeat, runs=runs, overhead_us=overhead_us)


def _check_counted(bench: Object, packets: Object, *, expected: int) -> None:
    """The counters really ran: a benchmark of a program that bailed out early times nothing."""
    shared = bench.maps["shared_counters"][0]
    per_cpu = sum(bench.maps["per_cpu_counters"][0])
    counts = packets.maps["counts"]
    assert isinstance(counts, PerCpuArrayMap)
    ours = counts.sum(0).l3[0].packets  # l3[0]: L3_IPV4
    for name, count in (("count_shared", shared), ("count_per_cpu", per_cpu), ("count_packets", ours)):
        if count != expected:
            raise BpfscopeError(errno.EIO, f"{name} counted {count} packets of {expected}")


def _figures(
    samples: dict[str, list[_Sample]], pairs: dict[str, list[_Sample]], *, repeat: int, runs: int,
    overhead_us: float,
) -> list[Figure]:
    def over_rounds(values: list[_Sample]) -> tuple[float, Rounds]:
        return rounds(s.per_packet_ns for s in values)

    one = {key: over_rounds(values) for key, values in samples.items()}
    two = {key: over_rounds(values) for key, values in pairs.items()}
    # Each overhead is taken within a round, then the median over rounds.
    over_empty = {
        key: rounds(s.per_packet_ns - e.per_packet_ns for s, e in zip(values, samples["empty"]))
        for key, values in samples.items()
    }

    def kernel(of: dict[str, list[_Sample]]) -> str:
        return ", ".join(f"{key} {round(statistics.median(s.kernel_ns for s in values))}" for key, values in of.items())

    how = (f"test_run ×{repeat:,} on a 64-byte UDP frame, median of {runs} rounds, range beside it; thread CPU time "
           f"less the call's own ({overhead_us:.0f} µs), / repeat. The kernel's whole-ns figures (medians): "
           f"{kernel(samples)}")

    def figure(name: str, key: str, reference: str = "", reference_key: str = "", note: str = how,
               values: dict[str, tuple[float, Rounds]] = one, target: float | None = None) -> Figure:
        value, spread = values[key]
        ref_value, ref_spread = values[reference_key] if reference_key else (None, None)
        return Figure("xdp", name, value, "ns/packet", False, target=target, reference=reference or None,
                      reference_value=ref_value, note=note, spread=spread, reference_spread=ref_spread)

    figures = [
        figure("empty XDP_PASS program", "empty"),
        figure("packets counter (count_packets)", "ours", "seed: shared atomic counter", "shared"),
        figure("packets counter: overhead over empty", "ours", "seed: overhead over empty", "shared",
               values=over_empty, target=3.0,
               note="each program's time less the empty program's in the same round, then the median over "
                    "rounds, range beside it; ours parses Ethernet/IP/L4 and adds to a per-CPU slot, the seed "
                    "parses nothing"),
        figure("seed: shared atomic counter", "shared", "empty XDP_PASS program", "empty"),
        figure("per-CPU counter (the seed's work, no atomic)", "per_cpu", "seed: shared atomic counter", "shared"),
    ]
    names = {"ours": "packets counter", "shared": "seed: shared atomic counter", "per_cpu": "per-CPU counter"}
    for key, (value, spread) in two.items():
        figures.append(Figure(
            "xdp", f"{names[key]}, 2 threads on 2 CPUs", value, "ns/packet", False,
            reference=f"{names[key]}, 1 thread", reference_value=one[key][0], spread=spread,
            reference_spread=one[key][1],
            note=f"both threads in test_run at once, each pinned to its CPU; their mean, median of {runs} "
                 f"rounds, range beside it (kernel's: {kernel(pairs)})",
        ))
    return figures
