"""USDT: a static probe a program was built with (here CPython's python:gc__start, if this Python has
them: `readelf -n` shows stapsdt notes); its semaphore is raised while the link holds it."""
import gc
import os
import sys
from pathlib import Path

from bpfscope import load

with load(Path(__file__).with_name("usdt.bpf.o")) as obj, \
        obj.programs["count_collections"].attach_usdt(sys.executable, "python", "gc__start", pid=os.getpid()):
    for generation in (0, 1, 2):
        gc.collect(generation)
    print("collections:", obj.bss["collections"], "last generation:", obj.data["last_generation"])
