/* bpfscope flows: packets, bytes, first and last seen and TCP flags per flow and direction, from tc
 * on ingress and egress of one interface. Every packet passes unchanged.
 *
 * A flow is keyed from the interface's point of view (local = the packet's destination on ingress,
 * its source on egress), so both directions of a connection share one entry with in and out
 * counters. The map is an LRU_PERCPU_HASH: each CPU owns its copy of a value, so the hot path is
 * plain adds with no atomics and no cache line bouncing between CPUs; Python reduces the copies
 * (sum the counters, min of the non-zero first_seen, max last_seen, OR the flags). The LRU bounds
 * memory under a flood of new flows: the least recently used entry makes room for the new one. */
#include "packet.bpf.h"

/* TC_ACT_UNSPEC (TCX_NEXT on tcx): the verdict is left to the programs after this one, or the
 * default (pass): a watcher must not end the chain before a network plugin's own programs. */
#define TC_ACT_UNSPEC (-1)

enum flow_direction {
	FLOW_IN = 0,
	FLOW_OUT = 1,
};

struct flow_key {
	__u8 local_addr[16];    /* IPv4: the first 4 bytes, the rest zero */
	__u8 remote_addr[16];
	__u16 local_port;       /* host byte order; 0 without TCP/UDP (ICMP, fragments, truncated) */
	__u16 remote_port;
	__u8 family;            /* enum l3_proto: L3_IPV4 or L3_IPV6 */
	__u8 proto;             /* IPPROTO_* */
	__u16 pad;              /* named so it is zeroed: the whole key is hashed */
};

struct flow_counters {
	__u64 packets_in;
	__u64 packets_out;
	__u64 bytes_in;         /* skb->len: the whole frame, Ethernet header included */
	__u64 bytes_out;
	__u64 first_seen_ns;    /* bpf_ktime_get_ns (CLOCK_MONOTONIC); 0 on a CPU that saw none */
	__u64 last_seen_ns;
	__u8 tcp_flags_in;      /* every flag seen, ORed */
	__u8 tcp_flags_out;
	__u8 pad[6];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 65536);     /* Python sets --max-flows before load */
	__type(key, struct flow_key);
	__type(value, struct flow_counters);
} flows SEC(".maps");

BTF_EXPORT(enum l3_proto, family);

static __always_inline void track(struct __sk_buff *ctx, enum flow_direction dir)
{
	struct skb_bounds *skb = (struct skb_bounds *)ctx;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u64 bytes = skb->len;
	__u64 now = bpf_ktime_get_ns();
	struct packet_info info;
	struct flow_key key;
	struct flow_counters *stats;

	parse_packet(data, end, &info);
	if ((info.l3 != L3_IPV4 && info.l3 != L3_IPV6) || !info.ip_proto)
		return;   /* not IP, or too short to name its addresses */

	__builtin_memset(&key, 0, sizeof(key));
	key.family = info.l3;
	key.proto = info.ip_proto;
	if (dir == FLOW_IN) {
		__builtin_memcpy(key.local_addr, &info.daddr, 16);
		__builtin_memcpy(key.remote_addr, &info.saddr, 16);
		key.local_port = bpf_ntohs(info.dport);
		key.remote_port = bpf_ntohs(info.sport);
	} else {
		__builtin_memcpy(key.local_addr, &info.saddr, 16);
		__builtin_memcpy(key.remote_addr, &info.daddr, 16);
		key.local_port = bpf_ntohs(info.sport);
		key.remote_port = bpf_ntohs(info.dport);
	}

	stats = bpf_map_lookup_elem(&flows, &key);
	if (!stats) {
		struct flow_counters fresh;

		/* A new entry gets this value on this CPU and zeroes on the others. BPF_NOEXIST: if
		 * another CPU created it first, keep its entry and count into ours below. */
		__builtin_memset(&fresh, 0, sizeof(fresh));
		fresh.first_seen_ns = now;
		bpf_map_update_elem(&flows, &key, &fresh, BPF_NOEXIST);
		stats = bpf_map_lookup_elem(&flows, &key);
		if (!stats)
			return;
	}
	if (!stats->first_seen_ns)
		stats->first_seen_ns = now;
	stats->last_seen_ns = now;
	if (dir == FLOW_IN) {
		stats->packets_in += 1;
		stats->bytes_in += bytes;
		stats->tcp_flags_in |= info.tcp_flags;
	} else {
		stats->packets_out += 1;
		stats->bytes_out += bytes;
		stats->tcp_flags_out |= info.tcp_flags;
	}
}

SEC("tc")
int track_ingress(struct __sk_buff *ctx)
{
	track(ctx, FLOW_IN);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int track_egress(struct __sk_buff *ctx)
{
	track(ctx, FLOW_OUT);
	return TC_ACT_UNSPEC;
}
