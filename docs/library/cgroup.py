"""A cgroup hook: sockets made by the processes of a cgroup v2 directory, here this process's own (the
path is relative to where cgroup v2 is mounted)."""
import os
import socket
from pathlib import Path

from bpfscope import load

with open("/proc/self/cgroup") as f:    # the cgroup v2 line: 0::/PATH
    own = next(line[3:].strip() for line in f if line.startswith("0::"))
with load(Path(__file__).with_name("net.bpf.o"), cfg_tgid=os.getpid()) as obj, \
        obj.programs["count_sockets"].attach_cgroup(own.lstrip("/") or "."):
    for _ in range(4):
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()
    print("sockets made:", obj.bss["sockets_made"])
