"""`bpfscope bench ringbuf`: how fast the ring buffer readers consume, beside libbpf's C reader on
the same ring, and what consuming a steady 1 M events/s costs.

ringbuf_bench.bpf.c fills the ring from BPF_PROG_TEST_RUN (16-byte records, BPF_RB_NO_WAKEUP), then
one reader drains it while the clock runs; filling is not timed. The C reference
(ringbuf_consumer.c: libbpf's record loop, ring_buffer__consume, with a counting callback) is
compiled here when a C compiler and libbpf's headers exist, and reads the same map through a bpffs
pin, timed the same way. Each round fills and drains once for every reader in turn, C included, so
a busy stretch of time lands on all of them; each figure, ours and the reference's alike, is the
median over rounds with their range."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .. import variants
from ..errors import NotSupportedError
from ..object import Object, ObjectSpec, tool_object
from ..pin import PIN_ROOT, remove_pins
from ..program import Program
from ..ringbuf import RingBuffer
from . import Figure, Rounds
from . import rounds as over_rounds

__all__ = ["run"]

_PACKET = bytes(64)
# Records per program run. One test_run per 10 000 records rather than repeat=N: an XDP test_run
# with repeat > 1 swaps the program into the XDP dispatcher and out again (bpf_prog_change_xdp),
# which took 20 to 50 ms per call here.
_PER_RUN = 10_000
_NOLOOP_MAX_PER_RUN = 1 << 15  # NOLOOP_MAX_PER_RUN in ringbuf_bench.bpf.c
_SLOT = 24  # 8-byte header + struct bench_event
_BPF_RB_NO_WAKEUP = 1
_REFERENCE = "libbpf ring_buffer__consume (C)"
_CONSUMER_SOURCE = Path(__file__).with_name("ringbuf_consumer.c")


def run(
    *,
    events: int = 2_500_000,
    rounds: int = 5,
    record_events: int = 1_000_000,
    load_rate: int = 1_000_000,
    load_seconds: float = 2.0,
    load_rounds: int = 3,
) -> list[Figure]:
    """`events` records per fill for the drain figures (about 60 MiB of ring at the default),
    `record_events` for the per-event readers, which are slower and run in the first 3 rounds only;
    `load_rate` events/s for `load_seconds`, `load_rounds` times, for the consumer CPU figures."""
    events = max(_PER_RUN, events // _PER_RUN * _PER_RUN)
    record_events = max(_PER_RUN, min(record_events, events) // _PER_RUN * _PER_RUN)
    rounds = max(1, rounds)

    rates: dict[str, list[float]] = {"batch": [], "c": [], "records": [], "iterate": []}
    with _load(_ring_bytes(events)) as obj, _CConsumer(obj) as c_consumer, obj.ring_buffer("events") as rb:
        for round_ in range(rounds):
            rates["batch"].append(_drain_rate(obj, rb, events, _batch_drain))
            if c_consumer.failed is None:
                rates["c"].append(c_consumer.drain_rate(events))
            if round_ < 3:
                rates["records"].append(_drain_rate(obj, rb, record_events, _record_drain))
                rates["iterate"].append(_drain_rate(obj, rb, record_events, _batch_iteration))
    reference = _Over(*over_rounds(rates["c"])) if rates["c"] else None
    c_note = f"; C: {c_consumer.failed}" if c_consumer.failed else ""
    how = f"median of {rounds} rounds, range beside it"
    figures = [
        _rate_figure("batch reader drain()", rates["batch"], 20, reference,
                     f"{how}; {events:,} records of 16 bytes per fill{c_note}"),
        _rate_figure("per-event reader records()", rates["records"], 2, reference,
                     f"median of {len(rates['records'])} rounds, range beside it; frozen dataclass per record, "
                     f"{record_events:,} per fill{c_note}"),
        _rate_figure("per-event iteration over a drain() batch", rates["iterate"], 2, reference,
                     f"median of {len(rates['iterate'])} rounds, range beside it; `for rec in rb.drain()`, numpy "
                     f"records, drain included{c_note}"),
    ]
    if reference is not None:
        figures.append(Figure(
            benchmark="ringbuf", name=_REFERENCE, value=reference.value, unit="M events/s", higher_is_better=True,
            spread=reference.spread, note=f"reference; {how}; {events:,} records per fill",
        ))
    cpu: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for _ in range(max(1, load_rounds)):
        for wakeups in (False, True):
            cpu[wakeups].append(_consumer_cpu(load_rate, load_seconds, wakeups=wakeups))
    figures += [_cpu_figure(load_rate, load_seconds, wakeups, cpu[wakeups]) for wakeups in (False, True)]
    return figures


@dataclass(frozen=True)
class _Over:
    """A figure over rounds: the median and the range."""

    value: float
    spread: Rounds


# --- the producer ---


def _ring_bytes(records: int) -> int:
    """The smallest power-of-two ring that holds `records` without loss (at least 64 KiB)."""
    return max(1 << 16, 1 << (records * _SLOT).bit_length())


def _load(ring_bytes: int, *, per_run: int = _PER_RUN, submit_flags: int = _BPF_RB_NO_WAKEUP) -> Object:
    """The object with one of its producers loaded: fill_ring, which loops with bpf_loop, or on a
    kernel without bpf_loop (before 5.17) fill_ring_noloop, an open-coded loop that the verifier
    walks once per record and so takes at most _NOLOOP_MAX_PER_RUN records a run."""
    spec = ObjectSpec.open(tool_object("ringbuf_bench"))
    if variants.choose(spec, "ringbuf_bench") is not None and per_run > _NOLOOP_MAX_PER_RUN:
        spec.close()
        raise NotSupportedError(
            "bpf_loop", f"{per_run} records a run; without it the producer writes at most {_NOLOOP_MAX_PER_RUN}"
        )
    spec.rodata["cfg_per_run"] = per_run
    spec.rodata["cfg_submit_flags"] = submit_flags
    spec.maps["events"].max_entries = ring_bytes
    return spec.load()


def _producer(obj: Object) -> Program:
    return obj.programs.get("fill_ring") or obj.programs["fill_ring_noloop"]


def _fill(obj: Object, records: int) -> None:
    fill_ring = _producer(obj)
    for _ in range(records // _PER_RUN):
        fill_ring.test_run(_PACKET)


# --- drain figures ---


def _batch_drain(rb: RingBuffer) -> int:
    return len(rb.drain())


def _record_drain(rb: RingBuffer) -> int:
    count = 0
    for _ in rb.records(timeout_ms=0):
        count += 1
    return count


def _batch_iteration(rb: RingBuffer) -> int:
    count = 0
    for _ in rb.drain():
        count += 1
    return count


def _drain_rate(obj: Object, rb: RingBuffer, records: int, drain: Callable[[RingBuffer], int]) -> float:
    """M records/s of `drain` on the ring just filled with `records`."""
    _fill(obj, records)
    start = time.perf_counter()
    got = drain(rb)
    elapsed = time.perf_counter() - start
    if got != records:
        raise RuntimeError(f"ringbuf benchmark: read {got} records of {records} (lost {rb.lost})")
    return records / elapsed / 1e6


def _rate_figure(name: str, rates: list[float], target: float, reference: Optional[_Over], note: str) -> Figure:
    value, spread = over_rounds(rates)
    return Figure(
        benchmark="ringbuf", name=name, value=value, unit="M events/s", higher_is_better=True, target=target,
        reference=_REFERENCE if reference is not None else None,
        reference_value=reference.value if reference is not None else None,
        reference_spread=reference.spread if reference is not None else None, spread=spread, note=note,
    )


# --- the C reference ---


class _CConsumer:
    """ringbuf_consumer.c, built and started on this object's ring (through a pin), or `failed` saying
    why there is none. drain_rate() has it drain the ring once: M records/s."""

    def __init__(self, obj: Object) -> None:
        self._obj = obj
        self._cleanup = ExitStack()
        self._consumer: Optional[subprocess.Popen[str]] = None
        self.failed: Optional[str] = None

    def __enter__(self) -> _CConsumer:
        try:
            self.failed = self._start()
        except BaseException:
            self._cleanup.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._cleanup.close()

    def _start(self) -> Optional[str]:
        compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
        if compiler is None:
            return "n/a: no C compiler"
        tmp = self._cleanup.enter_context(tempfile.TemporaryDirectory(prefix="bpfscope-bench-"))
        binary = os.path.join(tmp, "ringbuf_consumer")
        built = subprocess.run([compiler, "-O2", "-o", binary, str(_CONSUMER_SOURCE), "-lbpf"],
                               capture_output=True, text=True)
        if built.returncode != 0:
            first = (built.stderr.strip().splitlines() or ["failed"])[0]
            return f"n/a: {os.path.basename(compiler)} could not build ringbuf_consumer.c: {first}"
        pin_dir = os.path.join(PIN_ROOT, f"bench-{os.getpid()}")
        pin = os.path.join(pin_dir, "events")
        self._obj.maps["events"].pin(pin)
        self._cleanup.callback(remove_pins, pin_dir)
        consumer = subprocess.Popen([binary, pin], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, bufsize=1)
        self._cleanup.callback(_stop, consumer)
        assert consumer.stdin is not None and consumer.stdout is not None
        self._cleanup.callback(consumer.stdin.close)
        if consumer.stdout.readline().strip() != "ready":
            return f"n/a: ringbuf_consumer failed: {consumer.stderr.read().strip() if consumer.stderr else ''}"
        self._consumer = consumer
        return None

    def drain_rate(self, records: int) -> float:
        assert self._consumer is not None and self._consumer.stdin is not None
        assert self._consumer.stdout is not None
        _fill(self._obj, records)
        self._consumer.stdin.write("drain\n")
        reply = self._consumer.stdout.readline().split()
        if len(reply) != 2:
            raise RuntimeError("ringbuf benchmark: the C consumer stopped")
        count, nanoseconds = map(int, reply)
        if count != records:
            raise RuntimeError(f"ringbuf benchmark: the C consumer read {count} records of {records}")
        return count / nanoseconds * 1e3


def _stop(consumer: subprocess.Popen[str]) -> None:
    """Waits for the consumer to leave after its stdin closed; kills it if it does not."""
    try:
        consumer.wait(10)
    except subprocess.TimeoutExpired:
        consumer.kill()
        consumer.wait()


# --- consumer CPU under a steady load ---


def _consumer_cpu(rate: int, seconds: float, *, wakeups: bool) -> tuple[float, float]:
    """CPU time of the thread running poll() while a producer thread emits `rate` events/s in
    10 ms slices, as % of a core, and the rate achieved (M events/s). time.thread_time() counts the
    consumer's thread alone: test_run's CPU, spent in the producer's thread (ctypes drops the GIL
    for it), is not in it."""
    slice_seconds = 0.01
    per_slice = max(1, round(rate * slice_seconds))
    slices = max(1, round(seconds / slice_seconds))
    produced = slices * per_slice
    timeout_ms = 100 if wakeups else 10
    stop = threading.Event()
    result: dict[str, float] = {}

    # A second of events fits: a consumer held up for a while loses nothing.
    with _load(_ring_bytes(rate), per_run=per_slice, submit_flags=0 if wakeups else _BPF_RB_NO_WAKEUP) \
            as obj, obj.ring_buffer("events") as rb:

        def consume() -> None:
            cpu, wall = time.thread_time(), time.monotonic()
            received = 0
            while not stop.is_set() or rb.pending_bytes:
                received += len(rb.poll(timeout_ms))
            result.update(cpu=time.thread_time() - cpu, wall=time.monotonic() - wall, received=received)

        consumer = threading.Thread(target=consume, name="ringbuf-consumer")
        consumer.start()
        try:
            start = time.monotonic()
            for i in range(slices):
                delay = start + i * slice_seconds - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                _producer(obj).test_run(_PACKET)
            achieved = produced / (time.monotonic() - start)
        finally:
            stop.set()
            consumer.join()
        lost = rb.lost
    if result.get("received") != produced or lost:
        raise RuntimeError(f"ringbuf benchmark: consumed {result.get('received')} of {produced}, lost {lost}")
    return 100 * result["cpu"] / result["wall"], achieved / 1e6


def _cpu_figure(rate: int, seconds: float, wakeups: bool, runs: list[tuple[float, float]]) -> Figure:
    value, spread = over_rounds(percent for percent, _ in runs)
    achieved = min(rate for _, rate in runs)
    how = "kernel wakeups (flags 0), poll(100 ms)" if wakeups else "BPF_RB_NO_WAKEUP, poll(10 ms)"
    return Figure(
        benchmark="ringbuf",
        name=f"consumer CPU at {rate / 1e6:g} M events/s, {'kernel wakeups' if wakeups else 'no wakeups'}",
        value=value, unit="% of a core", higher_is_better=False, target=5, spread=spread,
        note=f"{how}; median of {len(runs)} rounds of {seconds:g} s, range beside it; at least "
             f"{achieved:.2f} M events/s produced",
    )
