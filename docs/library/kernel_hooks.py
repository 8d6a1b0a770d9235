"""This process's file opens, counted at a kernel hook: `python kernel_hooks.py kprobe|fentry|lsm`.
kprobes need CONFIG_KPROBES; fentry and lsm, BPF trampolines; lsm, the BPF LSM active (lsm=...,bpf)."""
import os
import sys
from pathlib import Path

from bpfscope import ObjectSpec

kind = sys.argv[1]
spec = ObjectSpec.open(Path(__file__).with_name("kernel_hooks.bpf.o"))
spec.rodata["cfg_tgid"] = os.getpid()
for name, program in spec.programs.items():
    program.autoload = name == f"count_{kind}"     # load this one program: the others may not load here
with spec.load() as obj, obj.programs[f"count_{kind}"].attach():   # the hook its section names
    for _ in range(5):
        open(__file__).close()
    print("opens:", obj.bss[f"{kind}_opens"])
