/* Tail calls: `dispatch` jumps to the program in slot `slot` of `jumps`. Slot 0 is filled at load (a static
 * initialiser), slot 1 from Python; an empty slot makes no jump and dispatch goes on. */
#include "bpfscope.bpf.h"

__u32 slot = 0;

SEC("xdp")
int drop_all(struct xdp_md *ctx)
{
	return XDP_DROP;
}

SEC("xdp")
int pass_all(struct xdp_md *ctx)
{
	return XDP_PASS;
}

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__array(values, int (void *));
} jumps SEC(".maps") = {
	.values = { [0] = (void *)&drop_all },
};

SEC("xdp")
int dispatch(struct xdp_md *ctx)
{
	bpf_tail_call(ctx, &jumps, slot);
	return XDP_ABORTED;                     /* reached only when the slot is empty */
}
