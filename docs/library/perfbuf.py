"""A perf event array, read as a ring buffer is: numpy batches or typed records, and the samples each
CPU's ring had no room for."""
import os
from pathlib import Path

from bpfscope import load

with load(Path(__file__).with_name("events.bpf.o"), cfg_tgid=os.getpid()) as obj, \
        obj.programs["to_perf"].attach(), obj.perf_buffer("perf", record="event", pages=4) as events:
    for _ in range(5):
        os.getppid()
    batch = events.poll(timeout_ms=1000)
    print(len(batch), "events, seq", sorted(batch["seq"].tolist()), "lost", events.lost)
