"""Typed maps: keys and values from BTF, as plain Python one at a time or numpy arrays in one batch."""
import os
import threading
from pathlib import Path

from bpfscope import load


def call_getppid(times: int) -> None:
    for _ in range(times):
        os.getppid()


with load(Path(__file__).with_name("maps.bpf.o"), cfg_tgid=os.getpid()) as obj:
    with obj.programs["count_by_thread"].attach():
        workers = [threading.Thread(target=call_getppid, args=(n,)) for n in (10, 20, 30)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    threads = obj.maps["threads"]
    tids, values = threads.lookup_batch()          # numpy: uint32 keys, a structured array of values
    print("calls per thread:", sorted(values["calls"].tolist()))
    one = threads[workers[0].native_id]            # one value: a frozen dataclass
    print(f"{type(one).__name__}(calls={one.calls})")
    print("total over CPUs:", obj.maps["total"].sum(0))
    del threads[workers[0].native_id]
    print("threads left:", len(threads))
