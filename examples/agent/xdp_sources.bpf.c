/* Packets and bytes received, by source address and IP protocol (xdp_sources.yaml exports them).
 * IPv4 sources are kept as IPv4-mapped IPv6 addresses (::ffff:a.b.c.d), so one key holds both
 * families; the ipv6 decoder shows those as a.b.c.d. Counts are per CPU: one hash lookup per packet,
 * no atomics. Every packet passes. */
#include "packet.bpf.h"

/* The protocol label's values: the enum decoder shows these names, and a number for any other. */
enum ip_protocol {
	icmp = 1,
	tcp = 6,
	udp = 17,
	icmpv6 = 58,
};

struct source_key {
	__u8 addr[16];
	enum ip_protocol protocol;      /* 0 when the IP header was cut short */
};

struct source_count {
	__u64 packets;
	__u64 bytes;
};

/* LRU: a flood from spoofed sources evicts the quietest sources instead of stopping the count. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct source_key);
	__type(value, struct source_count);
} sources SEC(".maps");

SEC("xdp")
int count_sources(struct xdp_md *ctx)
{
	void *data = xdp_data(ctx);
	void *end = xdp_data_end(ctx);
	struct source_key key = {};
	struct source_count *count;
	struct packet_info info;

	parse_packet(data, end, &info);
	if (info.l3 == L3_IPV4) {
		key.addr[10] = 0xff;
		key.addr[11] = 0xff;
		__builtin_memcpy(&key.addr[12], &info.saddr.v4, 4);
	} else if (info.l3 == L3_IPV6) {
		__builtin_memcpy(key.addr, info.saddr.v6, 16);
	} else {
		return XDP_PASS;
	}
	key.protocol = info.ip_proto;
	count = map_lookup_or_init(&sources, &key, &(struct source_count){});
	if (!count)
		return XDP_PASS;
	count->packets += 1;
	count->bytes += end - data;
	return XDP_PASS;
}
