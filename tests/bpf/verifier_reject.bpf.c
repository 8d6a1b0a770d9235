/* A program the verifier must reject: it dereferences a hash map lookup without checking it for NULL.
 * (A hash map: recent kernels prove a constant-key array lookup non-NULL and would accept it.) */
#include "bpfscope.bpf.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

SEC("xdp")
int unchecked_lookup(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *count = bpf_map_lookup_elem(&counters, &zero);

	*count += 1;
	return XDP_PASS;
}
