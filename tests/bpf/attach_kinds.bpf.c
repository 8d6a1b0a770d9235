/* One program per attach kind; each counts its hits in a per-CPU slot, filtered in the kernel to the
 * test's own process (cfg_tgid) where the hook sees every process. */
#include "bpfscope.bpf.h"
#include <bpf/usdt.bpf.h>

enum hit {
	HIT_TRACEPOINT = 0,
	HIT_UPROBE = 1,
	HIT_URETPROBE = 2,
	HIT_PERF_EVENT = 3,
	HIT_TC = 4,
	HIT_ANY_GETPPID = 5,
	HIT_FAULT_SAMPLE = 6,
	HIT_USDT = 7,
	HIT_UPROBE_MULTI = 8,
	HIT_URETPROBE_MULTI = 9,
	HIT_COUNT,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HIT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

BTF_EXPORT(enum hit, hits_key);

/* What the programs saw beside their counts: the sum of the USDT probe's arguments (slot 0), and the
 * page-fault counter each sample read, the last one (slot 1). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} seen SEC(".maps");

enum { SEEN_USDT_SUM = 0, SEEN_FAULT_COUNTER = 1 };

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

/* Every getppid() of every process: a perf event decides whose are seen. */
SEC("tracepoint")
int count_any_getppid(void *ctx)
{
	count(HIT_ANY_GETPPID);
	return 0;
}

/* A sample every `period` page faults: the counter it read is a multiple of the period. */
SEC("perf_event")
int sample_faults(struct bpf_perf_event_data *ctx)
{
	struct bpf_perf_event_value value;
	__u32 key = SEEN_FAULT_COUNTER;

	count(HIT_FAULT_SAMPLE);
	if (!bpf_perf_prog_read_value(ctx, &value, sizeof(value)))
		bpf_map_update_elem(&seen, &key, &value.counter, BPF_ANY);
	return 0;
}

SEC("usdt")
int BPF_USDT(count_ticks, long value)
{
	__u32 key = SEEN_USDT_SUM;
	__u64 *sum = bpf_map_lookup_elem(&seen, &key);

	count(HIT_USDT);
	if (sum)
		__sync_fetch_and_add(sum, value);
	return 0;
}

SEC("uprobe.multi")
int BPF_KPROBE(count_multi_entry)
{
	if (ours())
		count(HIT_UPROBE_MULTI);
	return 0;
}

SEC("uretprobe.multi")
int BPF_KRETPROBE(count_multi_return)
{
	if (ours())
		count(HIT_URETPROBE_MULTI);
	return 0;
}
