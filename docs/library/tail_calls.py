"""Tail calls: a program array filled at load and at run time, tried on a packet with test_run
(BPF_PROG_TEST_RUN) instead of an interface."""
from pathlib import Path

from bpfscope import load

with load(Path(__file__).with_name("tail_calls.bpf.o")) as obj:
    jumps = obj.maps["jumps"]                   # a ProgramArray
    jumps[1] = obj.programs["pass_all"]         # a Program, or its fd
    for slot in range(3):
        obj.bss["slot"] = slot
        result = obj.programs["dispatch"].test_run(bytes(64))
        print(f"slot {slot}: {result.action.name}")
