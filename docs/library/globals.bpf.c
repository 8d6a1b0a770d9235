/* Global variables in each data section libbpf maps: the program adds `step` to `total` on each getppid()
 * call of cfg_tgid and notes the calling thread. */
#include "bpfscope.bpf.h"

const volatile __u32 cfg_tgid = 0;      /* .rodata: frozen at load */
__u64 total = 0;                         /* .bss: zeroed */
__u64 step = 1;                          /* .data: initialised */
__u32 last_tid SEC(".data.last") = 0;    /* .data.last: a section of its own */

SEC("tracepoint/syscalls/sys_enter_getppid")
int add_step(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();

	if (id >> 32 != cfg_tgid)
		return 0;
	__sync_fetch_and_add(&total, step);
	last_tid = (__u32)id;
	return 0;
}
