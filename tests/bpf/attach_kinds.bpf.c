/* One program per attach kind; each counts its hits in a per-CPU slot, filtered in the kernel to the
 * test's own process (cfg_tgid) where the hook sees every process. */
#include "bpfscope.bpf.h"

enum hit {
	HIT_TRACEPOINT = 0,
	HIT_UPROBE = 1,
	HIT_URETPROBE = 2,
	HIT_PERF_EVENT = 3,
	HIT_TC = 4,
	HIT_COUNT,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HIT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

BTF_EXPORT(enum hit, hits_key);

const volatile __u32 cfg_tgid = 0;

static __always_inline void count(__u32 key)
{
	__u64 *slot = bpf_map_lookup_elem(&hits, &key);

	if (slot)
		*slot += 1;
}

static __always_inline bool ours(void)
{
	return (bpf_get_current_pid_tgid() >> 32) == cfg_tgid;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int count_getppid(void *ctx)
{
	if (ours())
		count(HIT_TRACEPOINT);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(count_entry)
{
	if (ours())
		count(HIT_UPROBE);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(count_return)
{
	if (ours())
		count(HIT_URETPROBE);
	return 0;
}

SEC("perf_event")
int count_tick(void *ctx)
{
	count(HIT_PERF_EVENT);
	return 0;
}

SEC("tc")
int count_tc(struct __sk_buff *skb)
{
	count(HIT_TC);
	return 0; /* TC_ACT_OK: never changes traffic */
}
