/* bpfscope bench xdp: programs timed beside the packets counter with BPF_PROG_TEST_RUN.
 * pass_packets is the floor every XDP program pays; count_shared is the seed's counter, one
 * u64 shared by every CPU and bumped atomically; count_per_cpu does the same work with a
 * per-CPU slot, to separate the cost of the atomic from the cost of parsing. */
#include "bpfscope.bpf.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} shared_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} per_cpu_counters SEC(".maps");

SEC("xdp")
int pass_packets(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("xdp")
int count_shared(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *count = bpf_map_lookup_elem(&shared_counters, &zero);

	if (count)
		__sync_fetch_and_add(count, 1);
	return XDP_PASS;
}

SEC("xdp")
int count_per_cpu(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *count = bpf_map_lookup_elem(&per_cpu_counters, &zero);

	if (count)
		*count += 1;   /* this CPU's slot: no other CPU writes it */
	return XDP_PASS;
}
