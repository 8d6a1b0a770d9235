/* The one packet parser: Ethernet (with up to two VLAN tags), ARP, IPv4, IPv6 (skipping the common
 * extension headers) and the TCP/UDP/ICMP header after them. Every read is bounds-checked, so
 * truncated and malformed packets are classified as far as they parse and never read past the end. */
#ifndef BPFSCOPE_PACKET_BPF_H
#define BPFSCOPE_PACKET_BPF_H

#include "bpfscope.bpf.h"

/* Wire formats, fixed by their RFCs, declared here rather than taken from vmlinux.h: vmlinux.h marks
 * every struct for CO-RE relocation, and one relocation makes libbpf load and parse the kernel's
 * whole BTF (about 11 MiB of memory) although these layouts can never change. */
struct wire_eth {
	__u8 dst[6];
	__u8 src[6];
	__be16 proto;
};

struct wire_vlan {
	__be16 tci;
	__be16 proto;
};

struct wire_ipv4 {
	__u8 version_ihl;
	__u8 tos;
	__be16 total_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__sum16 check;
	__be32 saddr;
	__be32 daddr;
};

struct wire_ipv6 {
	__be32 version_class_flow;
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct wire_ipv6_ext {
	__u8 nexthdr;
	__u8 hdrlen;    /* in 8-byte units, not counting the first 8 bytes */
};

struct wire_ipv6_frag {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 id;
};

struct wire_tcp {
	__be16 sport;
	__be16 dport;
	__be32 seq;
	__be32 ack;
	__u8 data_offset;
	__u8 flags;
	__be16 window;
	__sum16 check;
	__be16 urgent;
};

struct wire_udp {
	__be16 sport;
	__be16 dport;
	__be16 len;
	__sum16 check;
};

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_ARP 0x0806
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define IPV6_MAX_EXT_HEADERS 4
/* IPv6 next-header values are macros in linux/in6.h, so vmlinux.h does not have them. */
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_ICMP 58
#define NEXTHDR_DEST 60

enum l3_proto {
	L3_IPV4 = 0,
	L3_IPV6 = 1,
	L3_ARP = 2,
	L3_OTHER = 3,
	L3_PROTO_COUNT,
};

enum l4_proto {
	L4_TCP = 0,
	L4_UDP = 1,
	L4_ICMP = 2,
	L4_OTHER = 3,
	L4_PROTO_COUNT,
};

struct packet_info {
	enum l3_proto l3;
	enum l4_proto l4;       /* meaningful only when l3 is IPv4 or IPv6 */
	__u8 ip_proto;          /* IPPROTO_* of the transport header, 0 if none was reached */
	__u8 fragment;          /* a non-first fragment: no transport header in this packet */
	__u16 sport;            /* network byte order, 0 when not TCP/UDP or truncated */
	__u16 dport;
	__u8 tcp_flags;
	__u16 payload_off;      /* TCP/UDP payload: its offset from the frame's start, and its length by */
	__u16 payload_len;      /* the IP header (Ethernet padding is not payload); both 0 without one */
	union {
		__be32 v4;
		__u8 v6[16];
	} saddr, daddr;
};

static __always_inline enum l4_proto l4_of(__u8 proto)
{
	switch (proto) {
	case IPPROTO_TCP:
		return L4_TCP;
	case IPPROTO_UDP:
		return L4_UDP;
	case IPPROTO_ICMP:
	case NEXTHDR_ICMP:
		return L4_ICMP;
	default:
		return L4_OTHER;
	}
}

/* `l4_off` is where the transport header starts in the frame, `l4_len` how many bytes the IP
 * header says follow from there. Kept as numbers, not pointers: the payload itself may lie past
 * the linear data (bpf_skb_load_bytes reads it there). */
static __always_inline void parse_transport(void *l4, void *end, __u32 l4_off, __u32 l4_len,
					    struct packet_info *info)
{
	__u32 header_len;

	if (info->ip_proto == IPPROTO_TCP) {
		struct wire_tcp *tcp = l4;

		if ((void *)(tcp + 1) > end)
			return;
		info->sport = tcp->sport;
		info->dport = tcp->dport;
		info->tcp_flags = tcp->flags;
		header_len = (tcp->data_offset >> 4) * 4;
		if (header_len < sizeof(*tcp))
			return;
	} else if (info->ip_proto == IPPROTO_UDP) {
		struct wire_udp *udp = l4;

		if ((void *)(udp + 1) > end)
			return;
		info->sport = udp->sport;
		info->dport = udp->dport;
		header_len = sizeof(*udp);
	} else {
		return;
	}
	if (l4_len > header_len) {
		info->payload_off = l4_off + header_len;
		info->payload_len = l4_len - header_len;
	}
}

static __always_inline void parse_ipv4(void *l3, void *end, __u32 l3_off, struct packet_info *info)
{
	struct wire_ipv4 *ip = l3;
	__u32 header_len, total_len;

	if ((void *)(ip + 1) > end)
		return;
	header_len = (ip->version_ihl & 0x0F) * 4;
	if (header_len < sizeof(*ip))
		return;
	info->saddr.v4 = ip->saddr;
	info->daddr.v4 = ip->daddr;
	info->ip_proto = ip->protocol;
	info->l4 = l4_of(ip->protocol);
	if (ip->frag_off & bpf_htons(0x1FFF)) {
		info->fragment = 1;
		return;
	}
	total_len = bpf_ntohs(ip->total_len);
	parse_transport(l3 + header_len, end, l3_off + header_len,
			total_len > header_len ? total_len - header_len : 0, info);
}

static __always_inline void parse_ipv6(void *l3, void *end, __u32 l3_off, struct packet_info *info)
{
	struct wire_ipv6 *ip6 = l3;
	void *cursor = ip6 + 1;
	__u32 ext_len = 0;     /* extension headers skipped, in bytes */
	__u32 payload_len;
	__u8 next;

	if (cursor > end)
		return;
	__builtin_memcpy(info->saddr.v6, ip6->saddr, 16);
	__builtin_memcpy(info->daddr.v6, ip6->daddr, 16);
	next = ip6->nexthdr;

	for (int i = 0; i < IPV6_MAX_EXT_HEADERS; i++) {
		struct wire_ipv6_ext *ext = cursor;

		if (next == NEXTHDR_FRAGMENT) {
			struct wire_ipv6_frag *frag = cursor;

			if ((void *)(frag + 1) > end)
				return;
			next = frag->nexthdr;
			cursor = frag + 1;
			ext_len += sizeof(*frag);
			if (frag->frag_off & bpf_htons(0xFFF8)) {
				info->ip_proto = next;
				info->l4 = l4_of(next);
				info->fragment = 1;
				return;
			}
			continue;
		}
		if (next != NEXTHDR_HOP && next != NEXTHDR_ROUTING && next != NEXTHDR_DEST)
			break;
		if ((void *)(ext + 1) > end)
			return;
		next = ext->nexthdr;
		cursor += (ext->hdrlen + 1) * 8;
		ext_len += (ext->hdrlen + 1) * 8;
	}
	info->ip_proto = next;
	info->l4 = l4_of(next);
	payload_len = bpf_ntohs(ip6->payload_len);
	parse_transport(cursor, end, l3_off + sizeof(*ip6) + ext_len,
			payload_len > ext_len ? payload_len - ext_len : 0, info);
}

/* Fills `info` from the frame in [data, end). Always returns; what could not be read stays zero. */
static __always_inline void parse_packet(void *data, void *end, struct packet_info *info)
{
	struct wire_eth *eth = data;
	void *cursor = eth + 1;
	__u16 proto;

	__builtin_memset(info, 0, sizeof(*info));
	info->l3 = L3_OTHER;
	info->l4 = L4_OTHER;
	if (cursor > end)
		return;
	proto = eth->proto;

	for (int i = 0; i < 2; i++) {
		struct wire_vlan *vlan = cursor;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vlan + 1) > end)
			return;
		proto = vlan->proto;
		cursor = vlan + 1;
	}

	switch (proto) {
	case bpf_htons(ETH_P_IP):
		info->l3 = L3_IPV4;
		parse_ipv4(cursor, end, cursor - data, info);
		break;
	case bpf_htons(ETH_P_IPV6):
		info->l3 = L3_IPV6;
		parse_ipv6(cursor, end, cursor - data, info);
		break;
	case bpf_htons(ETH_P_ARP):
		info->l3 = L3_ARP;
		break;
	}
}

#endif
