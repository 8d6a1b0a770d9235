"""Open, configure, load, attach, read, close: this process's getppid() calls, counted in the kernel."""
import os
from pathlib import Path

from bpfscope import ObjectSpec

spec = ObjectSpec.open(Path(__file__).with_name("getppid.bpf.o"))  # parsed: nothing in the kernel yet
spec.rodata["cfg_tgid"] = os.getpid()   # a const volatile global, written before load
with spec.load() as obj:                # verified and loaded; maps created; .rodata frozen
    program = obj.programs["count_getppid"]
    with program.attach_tracepoint("syscalls", "sys_enter_getppid"):
        for _ in range(10):
            os.getppid()
    os.getppid()                        # the link is closed: not counted
    print("getppid calls:", obj.bss["calls"])
# the object is closed: its programs and maps are gone from the kernel
