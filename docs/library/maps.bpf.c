/* getppid() calls per thread of cfg_tgid (a hash of structs), and in all (a per-CPU array). */
#include "bpfscope.bpf.h"

struct thread_calls {
	__u64 calls;
	__u64 last_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);                     /* thread id */
	__type(value, struct thread_calls);
} threads SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);  /* one slot per CPU: no atomics */
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} total SEC(".maps");

const volatile __u32 cfg_tgid = 0;

SEC("tracepoint/syscalls/sys_enter_getppid")
int count_by_thread(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid(), *sum;
	__u32 tid = (__u32)id, zero = 0;
	struct thread_calls *seen, fresh = {};

	if (id >> 32 != cfg_tgid)
		return 0;
	seen = map_lookup_or_init(&threads, &tid, &fresh);   /* bpfscope.bpf.h: lookup, else insert */
	if (seen) {
		seen->calls += 1;                                /* only this thread writes its entry */
		seen->last_ns = bpf_ktime_get_ns();
	}
	sum = bpf_map_lookup_elem(&total, &zero);
	if (sum)
		*sum += 1;
	return 0;
}
