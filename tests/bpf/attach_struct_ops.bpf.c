/* A TCP congestion control in BPF (a struct_ops map): Reno's answers, and a count of the connections
 * it was set up for. */
#include "bpfscope.bpf.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} connections SEC(".maps");

SEC("struct_ops/bpfscope_init")
void BPF_PROG(bpfscope_init, struct sock *sk)
{
	__u32 zero = 0;
	__u64 *count = bpf_map_lookup_elem(&connections, &zero);

	if (count)
		__sync_fetch_and_add(count, 1);
}

SEC("struct_ops/bpfscope_ssthresh")
__u32 BPF_PROG(bpfscope_ssthresh, struct sock *sk)
{
	const struct tcp_sock *tp = (struct tcp_sock *)sk;

	return tp->snd_cwnd > 4 ? tp->snd_cwnd >> 1 : 2;
}

SEC("struct_ops/bpfscope_cong_avoid")
void BPF_PROG(bpfscope_cong_avoid, struct sock *sk, __u32 ack, __u32 acked)
{
}

SEC("struct_ops/bpfscope_undo_cwnd")
__u32 BPF_PROG(bpfscope_undo_cwnd, struct sock *sk)
{
	const struct tcp_sock *tp = (struct tcp_sock *)sk;

	return tp->snd_cwnd;
}

SEC(".struct_ops")
struct tcp_congestion_ops bpfscope_cc = {
	.init = (void *)bpfscope_init,
	.ssthresh = (void *)bpfscope_ssthresh,
	.cong_avoid = (void *)bpfscope_cong_avoid,
	.undo_cwnd = (void *)bpfscope_undo_cwnd,
	.name = "bpfscope_cc",
};
