"""A perf event program: the CPU clock of this process sampled 1000 times a second of its CPU time."""
import os
import time
from pathlib import Path

from bpfscope import SoftwareEvent, load

with load(Path(__file__).with_name("sampling.bpf.o"), cfg_tgid=os.getpid()) as obj, \
        obj.programs["count_samples"].attach_perf_event(event=SoftwareEvent.CPU_CLOCK, frequency=1000,
                                                        pid=os.getpid()):
    start = time.process_time()
    while time.process_time() - start < 0.2:   # 0.2 s on a CPU: about 200 samples
        pass
    print("samples in 0.2 s of CPU:", obj.bss["samples"])
