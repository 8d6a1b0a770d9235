/* Counts the bytes an interface sends per TCP or UDP destination port (tc egress), and lets every
 * packet through to whatever runs after it. */
#include "packet.bpf.h"      /* wire headers as UAPI lays them out: no CO-RE relocation */

#define TC_ACT_UNSPEC (-1)

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u16);             /* destination port, host order */
	__type(value, __u64);           /* bytes */
} port_bytes SEC(".maps");

SEC("tc")
int count_ports(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct wire_eth *eth = data;
	struct wire_ipv4 *ip = data + sizeof(*eth);
	struct wire_udp *l4 = (void *)(ip + 1);    /* TCP and UDP both start with the two ports */
	__u64 *bytes, zero = 0;
	__u16 port;

	if ((void *)(l4 + 1) > end || eth->proto != bpf_htons(ETH_P_IP) || ip->version_ihl != 0x45 ||
	    (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP))
		return TC_ACT_UNSPEC;
	port = bpf_ntohs(l4->dport);
	bytes = map_lookup_or_init(&port_bytes, &port, &zero);
	if (!bytes)
		return TC_ACT_UNSPEC;
	*bytes += skb->len;
	return TC_ACT_UNSPEC;
}
