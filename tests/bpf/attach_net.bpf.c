/* Socket and network-namespace hooks, each counting what the test sends through it: a socket filter,
 * sk_lookup steering connections for one port to a listener on another, the flow dissector, sk_msg and
 * sk_skb on sockmaps, and a netfilter hook. Each lets everything through. */
#include "bpfscope.bpf.h"

#define NF_ACCEPT 1
#define ETH_P_IP 0x0800

enum hit {
	HIT_SOCKET_FILTER = 0,
	HIT_SK_LOOKUP,
	HIT_FLOW_DISSECTOR,
	HIT_SK_MSG,
	HIT_SK_SKB,
	HIT_NETFILTER,
	HIT_COUNT,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HIT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

BTF_EXPORT(enum hit, hits_key);

/* The listener sk_lookup hands connections to (slot 0). */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} listeners SEC(".maps");

/* Sockets whose sends (sk_msg) or receives (sk_skb) are counted. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} senders SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} receivers SEC(".maps");

const volatile __u32 cfg_steered_port = 0;

static __always_inline void count(__u32 key)
{
	__u64 *slot = bpf_map_lookup_elem(&hits, &key);

	if (slot)
		*slot += 1;
}

SEC("socket")
int count_datagrams(struct __sk_buff *skb)
{
	count(HIT_SOCKET_FILTER);
	return skb->len; /* keep the whole datagram */
}

SEC("sk_lookup")
int steer_port(struct bpf_sk_lookup *ctx)
{
	__u32 zero = 0;
	struct bpf_sock *sk;
	long err;

	if (ctx->local_port != cfg_steered_port)
		return SK_PASS;
	sk = bpf_map_lookup_elem(&listeners, &zero);
	if (!sk)
		return SK_PASS;
	err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	if (!err)
		count(HIT_SK_LOOKUP);
	return SK_PASS;
}

/* UDP over IPv4 only: the namespace's ICMP replies are dissected too. */
SEC("flow_dissector")
int count_dissections(struct __sk_buff *skb)
{
	struct bpf_flow_keys *keys = skb->flow_keys;
	__u8 protocol;

	if (keys->n_proto == bpf_htons(ETH_P_IP) && !bpf_skb_load_bytes(skb, keys->nhoff + 9, &protocol, 1) &&
	    protocol == IPPROTO_UDP)
		count(HIT_FLOW_DISSECTOR);
	return BPF_OK;
}

SEC("sk_msg")
int count_sends(struct sk_msg_md *msg)
{
	count(HIT_SK_MSG);
	return SK_PASS;
}

SEC("sk_skb/stream_verdict")
int count_receives(struct __sk_buff *skb)
{
	count(HIT_SK_SKB);
	return SK_PASS;
}

SEC("netfilter")
int count_packets_out(void *ctx)
{
	count(HIT_NETFILTER);
	return NF_ACCEPT;
}
