/* Network hooks, each counting what passes and changing nothing: an interface's received frames (XDP), its
 * sent packets (tc), one socket's datagrams (socket filter), sockets made in a cgroup (cgroup/sock_create). */
#include "bpfscope.bpf.h"

#define TC_ACT_OK 0

const volatile __u32 cfg_tgid = 0;
__u64 xdp_frames, tc_packets, socket_datagrams, sockets_made;

SEC("xdp")
int count_frames(struct xdp_md *ctx)
{
	__sync_fetch_and_add(&xdp_frames, 1);
	return XDP_PASS;
}

SEC("tc")
int count_packets(struct __sk_buff *skb)
{
	__sync_fetch_and_add(&tc_packets, 1);
	return TC_ACT_OK;
}

SEC("socket")
int count_datagrams(struct __sk_buff *skb)
{
	__sync_fetch_and_add(&socket_datagrams, 1);
	return skb->len;                        /* keep all of it; 0 would drop it */
}

SEC("cgroup/sock_create")
int count_sockets(struct bpf_sock *sock)
{
	if (bpf_get_current_pid_tgid() >> 32 == cfg_tgid)
		__sync_fetch_and_add(&sockets_made, 1);
	return 1;                               /* allow; 0 would refuse the socket */
}
