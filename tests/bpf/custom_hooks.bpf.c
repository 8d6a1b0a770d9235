/* One program per section the agent attaches by itself (tp/, uprobe/, uretprobe/, perf_event) and
 * one it attaches where its config says (tc); each counts its hits by hook and comm. */
#include "bpfscope.bpf.h"

enum hook {
	HOOK_TRACEPOINT = 0,
	HOOK_UPROBE = 1,
	HOOK_URETPROBE = 2,
	HOOK_PERF_EVENT = 3,
	HOOK_TC = 4,
};

struct hit_key {
	char comm[16];
	enum hook hook;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct hit_key);
	__type(value, __u64);
} hits SEC(".maps");

static __always_inline void count(enum hook hook)
{
	struct hit_key key = {};
	__u64 *slot;

	bpf_get_current_comm(key.comm, sizeof(key.comm));
	key.hook = hook;
	slot = map_lookup_or_init(&hits, &key, &(__u64){0});
	if (!slot)
		return;
	*slot += 1;
}

SEC("tp/syscalls/sys_enter_getppid")
int count_getppid(void *ctx)
{
	count(HOOK_TRACEPOINT);
	return 0;
}

SEC("uprobe/libc:getpid")
int BPF_KPROBE(count_getpid)
{
	count(HOOK_UPROBE);
	return 0;
}

SEC("uretprobe/libc:getpid")
int BPF_KRETPROBE(count_getpid_return)
{
	count(HOOK_URETPROBE);
	return 0;
}

SEC("perf_event")
int count_tick(void *ctx)
{
	count(HOOK_PERF_EVENT);
	return 0;
}

SEC("tc")
int count_tc(struct __sk_buff *skb)
{
	count(HOOK_TC);
	return 0; /* TC_ACT_OK: never changes traffic */
}
