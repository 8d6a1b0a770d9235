"""An iterator: the program runs once per task when the link is read, and what it prints is the text."""
import os
import threading
from pathlib import Path

from bpfscope import load

stop = threading.Event()
workers = [threading.Thread(target=stop.wait) for _ in range(2)]
for worker in workers:
    worker.start()
with load(Path(__file__).with_name("sampling.bpf.o"), cfg_tgid=os.getpid()) as obj, \
        obj.programs["list_threads"].attach() as tasks:    # iter/task: an IterLink
    lines = tasks.text().splitlines()                      # "TID COMM" per thread of this process
    print("threads:", len(lines), "as /proc has them:", len(lines) == len(os.listdir("/proc/self/task")))
stop.set()
