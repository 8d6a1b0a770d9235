/* Tail calls for tests/kernel/test_maps_tail_calls.py, driven by BPF_PROG_TEST_RUN:
 *   dispatch   counts itself in steps[0], then jumps through slot 0 of `jumps`
 *   step_one   what slot 0 holds from load on (a static initialiser): counts in steps[1], jumps through slot 1
 *   step_two   counts in steps[2] and passes the packet
 *   step_alt   counts in steps[3] and bounces it (XDP_TX)
 * What the packet gets tells how far the chain went: ABORTED when slot 0 is empty, DROP when slot 1 is. */
#include "bpfscope.bpf.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} steps SEC(".maps");

static __always_inline void count_step(__u32 step)
{
	__u64 *count = bpf_map_lookup_elem(&steps, &step);

	if (count)
		__sync_fetch_and_add(count, 1);
}

SEC("xdp")
int step_one(struct xdp_md *ctx);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__array(values, int (void *));
} jumps SEC(".maps") = {
	.values = { [0] = (void *)&step_one },
};

SEC("xdp")
int dispatch(struct xdp_md *ctx)
{
	count_step(0);
	bpf_tail_call(ctx, &jumps, 0);
	return XDP_ABORTED;
}

SEC("xdp")
int step_one(struct xdp_md *ctx)
{
	count_step(1);
	bpf_tail_call(ctx, &jumps, 1);
	return XDP_DROP;
}

SEC("xdp")
int step_two(struct xdp_md *ctx)
{
	count_step(2);
	return XDP_PASS;
}

SEC("xdp")
int step_alt(struct xdp_md *ctx)
{
	count_step(3);
	return XDP_TX;
}
