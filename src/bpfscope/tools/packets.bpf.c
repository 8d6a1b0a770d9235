/* bpfscope packets: counts every packet and byte an interface receives, by protocol, and passes
 * them all. Per-CPU counters: no shared cache line bounces between CPUs, no atomics. */
#include "packet.bpf.h"

struct proto_count {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, L3_PROTO_COUNT);
	__type(key, __u32);
	__type(value, struct proto_count);
} l3_protos SEC(".maps");

/* Transport protocols of IPv4 and IPv6 packets. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, L4_PROTO_COUNT);
	__type(key, __u32);
	__type(value, struct proto_count);
} l4_protos SEC(".maps");

/* Python names the rows of each map from these enums. */
BTF_EXPORT(enum l3_proto, l3_protos_key);
BTF_EXPORT(enum l4_proto, l4_protos_key);

static __always_inline void count(void *map, __u32 key, __u64 bytes)
{
	struct proto_count *slot = bpf_map_lookup_elem(map, &key);

	if (slot) {
		slot->packets += 1;
		slot->bytes += bytes;
	}
}

SEC("xdp")
int count_packets(struct xdp_md *ctx)
{
	void *data = xdp_data(ctx);
	void *end = xdp_data_end(ctx);
	__u64 bytes = end - data;
	struct packet_info info;

	parse_packet(data, end, &info);
	count(&l3_protos, info.l3, bytes);
	if (info.l3 == L3_IPV4 || info.l3 == L3_IPV6)
		count(&l4_protos, info.l4, bytes);
	return XDP_PASS;
}
