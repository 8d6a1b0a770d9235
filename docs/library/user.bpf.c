/* libc's getpid() on entry and on return: a uprobe and a uretprobe. */
#include "bpfscope.bpf.h"

__u64 getpid_calls;
__s32 getpid_returned;

SEC("uprobe")
int BPF_KPROBE(count_getpid)
{
	__sync_fetch_and_add(&getpid_calls, 1);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(note_getpid, int pid)
{
	getpid_returned = pid;
	return 0;
}
