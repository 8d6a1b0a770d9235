"""What outlives the process: a pinned link keeps its program attached after the object is closed, and a
pinned map keeps the counts, for this or any later process to read."""
import os
from pathlib import Path

from bpfscope import Globals, Link, Map, load

LINK, CALLS = "/sys/fs/bpf/docs_getppid_link", "/sys/fs/bpf/docs_getppid_calls"

with load(Path(__file__).with_name("getppid.bpf.o"), cfg_tgid=os.getpid()) as obj:
    with obj.programs["count_getppid"].attach() as link:    # from its section: tracepoint/syscalls/...
        link.pin(LINK)                                       # bpffs holds a reference too
    obj.bss.map.pin(CALLS)                                   # the map behind .bss

for _ in range(3):                     # object and link closed in this process: still counted
    os.getppid()
with Map.from_pin(CALLS) as calls:     # typed by the BTF the kernel keeps for the map
    print("getppid calls after close:", Globals(calls)["calls"])
Link.unpin(LINK)                       # the last reference: detached now
os.unlink(CALLS)
