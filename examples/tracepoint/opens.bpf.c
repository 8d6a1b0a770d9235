/* Counts openat() calls per process name, at the syscall's tracepoint; one process if asked. */
#include "bpfscope.bpf.h"

const volatile __u32 cfg_tgid = 0;      /* only this process; 0: every process */

struct comm {
	char name[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct comm);
	__type(value, __u64);
} opens SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_openat")
int count_opens(struct trace_event_raw_sys_enter *ctx)
{
	struct comm key = {};
	__u64 *count, zero = 0;

	if (cfg_tgid && bpf_get_current_pid_tgid() >> 32 != cfg_tgid)
		return 0;
	bpf_get_current_comm(key.name, sizeof(key.name));
	count = map_lookup_or_init(&opens, &key, &zero);
	if (!count)
		return 0;
	*count += 1;
	return 0;
}
