/* bpfscope bench guard: the flood where the kernel allows XDP live frames, and the floor of the
 * receiving side.
 *
 * send_flood runs under BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES on an Ethernet + IPv4
 * frame and an xdp_md naming the sending veth: every XDP_TX leaves through that veth into its
 * peer, the receiver under test, with no skb built on the sending side. Frame after frame it
 * gives the frame the next of cfg_sources source addresses, cfg_source_base + 0, 1, ..., so a
 * per-source limit sees that many sources. (Where the kernel refuses live frames, guard.py sends
 * the same frames from user space, AF_PACKET.)
 *
 * drop_packets, attached to the receiver, is what dropping in XDP costs there before any logic;
 * guard.py also probes live frames with it (one frame, dropped). */
#include "bpfscope.bpf.h"

const volatile __u32 cfg_sources = 1;           /* 1 to 131072 */
const volatile __u32 cfg_source_base = 0;       /* host byte order */

/* One sender thread on one CPU runs send_flood, so a plain global is enough. */
__u32 next_source = 0;

/* RFC 1624: the header checksum after one 16-bit word changed from `old` to `new`. */
static __always_inline __u16 checksum_update(__u16 check, __u16 old, __u16 new)
{
	__u32 sum = (__u16)~check + (__u16)~old + new;

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

SEC("xdp")
int send_flood(struct xdp_md *ctx)
{
	__u8 *ip = xdp_data(ctx) + 14;
	__u16 *check = (__u16 *)(ip + 10), *saddr = (__u16 *)(ip + 12);
	__u32 source;
	__u16 high, low;

	if ((void *)(ip + 20) > xdp_data_end(ctx))
		return XDP_ABORTED;
	if (cfg_sources <= 1)
		return XDP_TX;
	source = cfg_source_base + next_source++ % cfg_sources;
	/* A recycled page keeps what the last run wrote into it: set the address outright and
	 * adjust the checksum from whatever was there. (The UDP checksum is 0: none.) */
	high = bpf_htons(source >> 16);
	low = bpf_htons(source & 0xffff);
	*check = checksum_update(*check, saddr[0], high);
	*check = checksum_update(*check, saddr[1], low);
	saddr[0] = high;
	saddr[1] = low;
	return XDP_TX;
}

SEC("xdp")
int drop_packets(struct xdp_md *ctx)
{
	return XDP_DROP;
}
