/* Counts the getppid() calls of one process (cfg_tgid) at the syscall's tracepoint. */
#include "bpfscope.bpf.h"

const volatile __u32 cfg_tgid = 0;      /* .rodata: set from Python before load, then frozen */
__u64 calls = 0;                         /* .bss: read from Python while the program runs */

SEC("tracepoint/syscalls/sys_enter_getppid")
int count_getppid(void *ctx)
{
	if (bpf_get_current_pid_tgid() >> 32 == cfg_tgid)
		__sync_fetch_and_add(&calls, 1);
	return 0;
}
