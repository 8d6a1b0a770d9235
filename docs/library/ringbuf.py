"""A ring buffer written the plain libbpf way: the reader names the record type (a struct of the object's
BTF, or a numpy dtype; `bytes` for records of any size)."""
import os
from pathlib import Path

from bpfscope import load

with load(Path(__file__).with_name("events.bpf.o"), cfg_tgid=os.getpid()) as obj, \
        obj.programs["to_ring"].attach(), obj.ring_buffer("ring", record="event") as events:
    for _ in range(5):
        os.getppid()
    batch = events.poll(timeout_ms=1000)        # a numpy structured array: no Python per event
    print(len(batch), "events, seq", batch["seq"].tolist())
    os.getppid()
    for event in events.records(timeout_ms=100):  # typed records, until a poll finds nothing
        print("event", event.seq, "from", "this thread" if event.tid == os.getpid() else event.tid)
