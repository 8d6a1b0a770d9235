"""uprobe and uretprobe: a function of a library ("libc": found as the loader finds it) or a binary, on
entry and on return, in one process (pid) or in every process that runs it."""
import os
from pathlib import Path

from bpfscope import load

pid = os.getpid()
with load(Path(__file__).with_name("user.bpf.o")) as obj, \
        obj.programs["count_getpid"].attach_uprobe("libc", "getpid", pid=pid), \
        obj.programs["note_getpid"].attach_uprobe("libc", "getpid", pid=pid, retprobe=True):
    for _ in range(7):
        os.getpid()                     # CPython calls libc's getpid()
    print("getpid calls:", obj.bss["getpid_calls"])
    print("it returned this pid:", obj.bss["getpid_returned"] == pid)
