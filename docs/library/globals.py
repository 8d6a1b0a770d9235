"""Global variables after load: read and written by name, typed by BTF, in the memory the programs use
(where the kernel maps it, Linux 5.5+)."""
import os
from pathlib import Path

from bpfscope import load

with load(Path(__file__).with_name("globals.bpf.o"), cfg_tgid=os.getpid()) as obj, \
        obj.programs["add_step"].attach():
    os.getppid()
    obj.data["step"] = 5                # the next run of the program reads 5
    for _ in range(4):
        os.getppid()
    print("total:", obj.bss["total"], "mapped:", obj.bss.mapped)
    print("last caller is this thread:", obj.datasec(".data.last")["last_tid"] == os.getpid())
    print("rodata:", dict(obj.rodata) == {"cfg_tgid": os.getpid()})
