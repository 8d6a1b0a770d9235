/* bpfscope bench guard: the flood, and the floor of the receiving side.
 *
 * send_flood runs under BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES on an Ethernet + IPv4
 * frame and an xdp_md naming the sending veth: every XDP_TX leaves through that veth into its
 * peer, the receiver under test, with no skb built on the sending side. Frame after frame it
 * rotates the source address over cfg_sources hosts (the given address with its low three bits
 * replaced by 0, 1, ...), so a per-source limit sees a few sources, each far over its rate.
 *
 * drop_packets, attached to the receiver, is what dropping in XDP costs there before any logic. */
#include "bpfscope.bpf.h"

const volatile __u32 cfg_sources = 1;   /* 1 to 8 */

/* One sender thread on one CPU runs send_flood, so a plain global is enough. */
__u32 next_source = 0;

SEC("xdp")
int send_flood(struct xdp_md *ctx)
{
	__u8 *ip = xdp_data(ctx) + 14;
	__u16 *check, *word;
	__u32 sum, index;
	__u16 old;

	if ((void *)(ip + 20) > xdp_data_end(ctx))
		return XDP_ABORTED;
	if (cfg_sources <= 1)
		return XDP_TX;
	index = next_source++ % cfg_sources;
	/* A recycled page keeps what the last run wrote into it, so set the byte outright and adjust
	 * the header checksum for the 16-bit word it is in (RFC 1624). */
	word = (__u16 *)(ip + 14);   /* source address bytes 2 and 3 */
	check = (__u16 *)(ip + 10);
	old = *word;
	ip[15] = (ip[15] & ~0x07) | (__u8)(index & 0x07);
	sum = (__u16)~*check + (__u16)~old + *word;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	*check = ~sum;
	return XDP_TX;
}

SEC("xdp")
int drop_packets(struct xdp_md *ctx)
{
	return XDP_DROP;
}
