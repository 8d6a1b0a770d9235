/* freplace: an XDP program whose verdict comes from a global function, and a replacement for that
 * function that counts its calls and drops. The target is loaded first; the replacement is loaded
 * against it (ProgramSpec.set_attach_target). */
#include "bpfscope.bpf.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} replaced_calls SEC(".maps");

__noinline int verdict(struct xdp_md *ctx)
{
	return ctx ? XDP_PASS : XDP_ABORTED;
}

SEC("xdp")
int decide(struct xdp_md *ctx)
{
	return verdict(ctx);
}

SEC("freplace/verdict")
int drop_instead(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *calls = bpf_map_lookup_elem(&replaced_calls, &zero);

	if (calls)
		__sync_fetch_and_add(calls, 1);
	return XDP_DROP;
}
