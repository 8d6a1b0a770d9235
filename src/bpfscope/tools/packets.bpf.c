/* bpfscope packets: counts every packet and byte an interface receives, by protocol, and passes
 * them all. One per-CPU slot holds every counter: one map lookup per packet, no atomics, no cache
 * line shared between CPUs. */
#include "packet.bpf.h"

struct proto_count {
	__u64 packets;
	__u64 bytes;
};

struct packet_counts {
	struct proto_count l3[L3_PROTO_COUNT];   /* indexed by enum l3_proto */
	struct proto_count l4[L4_PROTO_COUNT];   /* IPv4 and IPv6 only, by enum l4_proto */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct packet_counts);
} counts SEC(".maps");

/* Python names the rows of each table from these enums. */
BTF_EXPORT(enum l3_proto, l3);
BTF_EXPORT(enum l4_proto, l4);

/* The masks prove the index in bounds to the verifier; the parser never yields more. */
_Static_assert(L3_PROTO_COUNT == 4 && L4_PROTO_COUNT == 4, "tables are masked with & 3");

SEC("xdp")
int count_packets(struct xdp_md *ctx)
{
	void *data = xdp_data(ctx);
	void *end = xdp_data_end(ctx);
	__u64 bytes = end - data;
	struct packet_info info;
	__u32 zero = 0;
	struct packet_counts *slot = bpf_map_lookup_elem(&counts, &zero);

	if (!slot)
		return XDP_PASS;
	parse_packet(data, end, &info);
	slot->l3[info.l3 & 3].packets += 1;
	slot->l3[info.l3 & 3].bytes += bytes;
	if (info.l3 == L3_IPV4 || info.l3 == L3_IPV6) {
		slot->l4[info.l4 & 3].packets += 1;
		slot->l4[info.l4 & 3].bytes += bytes;
	}
	return XDP_PASS;
}
