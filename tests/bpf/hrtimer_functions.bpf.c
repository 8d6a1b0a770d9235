/* hrtimer expiries by callback address, for the agent's ksym decoder: the test reads the addresses
 * back as kernel symbol names (hrtimer_wakeup for a sleeping task, the tick's handler). */
#include "bpfscope.bpf.h"

/* The start of events/timer/hrtimer_expire_entry/format. */
struct hrtimer_expire_record {
	__u64 common;
	__u64 hrtimer;
	__s64 now;
	__u64 function;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);             /* the timer's callback */
	__type(value, __u64);
} expiries SEC(".maps");

SEC("tp/timer/hrtimer_expire_entry")
int count_expiry(struct hrtimer_expire_record *ctx)
{
	__u64 function = ctx->function;
	__u64 *count = map_lookup_or_init(&expiries, &function, &(__u64){0});

	if (!count)
		return 0;
	*count += 1;
	return 0;
}
