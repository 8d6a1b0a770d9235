"""Auto-attach: every program whose section names its hook, attached in one call, as a libbpf skeleton's
attach does."""
import os
import subprocess
from pathlib import Path

from bpfscope import load

with load(Path(__file__).with_name("sections.bpf.o"), cfg_tgid=os.getpid()) as obj:
    for program in obj.programs.values():
        print(f"{program.name}: SEC(\"{program.section}\") autoattaches={program.autoattaches}")
    with obj.attach_all():             # a LinkGroup: closing it detaches every program
        for _ in range(3):
            subprocess.run(["true"], check=True)
    for counter in ("tracepoint_execs", "raw_tp_execs", "tp_btf_execs"):
        print(f"{counter}: {obj.bss[counter]}")
