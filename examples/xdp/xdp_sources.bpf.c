/* Counts the packets and bytes an interface receives per IPv4 source, and passes them all. */
#include "packet.bpf.h"      /* wire headers as UAPI lays them out: no CO-RE relocation */

struct source_count {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);   /* per CPU: no atomics; LRU: a flood of sources evicts */
	__uint(max_entries, 4096);
	__type(key, __u32);                            /* IPv4 source, network order */
	__type(value, struct source_count);
} sources SEC(".maps");

SEC("xdp")
int count_sources(struct xdp_md *ctx)
{
	void *data = xdp_data(ctx), *end = xdp_data_end(ctx);
	struct wire_eth *eth = data;
	struct wire_ipv4 *ip = data + sizeof(*eth);
	struct source_count *count, fresh = {};

	if ((void *)(ip + 1) > end || eth->proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	count = map_lookup_or_init(&sources, &ip->saddr, &fresh);
	if (!count)
		return XDP_PASS;
	count->packets += 1;
	count->bytes += end - data;
	return XDP_PASS;
}
