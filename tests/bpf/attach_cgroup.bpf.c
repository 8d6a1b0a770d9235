/* One program per cgroup hook, each counting what the processes of the cgroup it is attached to do.
 * The tests put a process of their own in a fresh cgroup, so every count is the test's. Each program
 * lets everything through. */
#include "bpfscope.bpf.h"

#define SOL_SOCKET 1
#define SO_REUSEADDR 2
#define DEVCG_DEV_CHAR 2 /* BPF_DEVCG_DEV_CHAR, an anonymous enum vmlinux.h does not carry */

enum hit {
	HIT_INGRESS = 0,
	HIT_EGRESS,
	HIT_SOCK_CREATE,
	HIT_CONNECT4,
	HIT_CONNECT6,
	HIT_BIND4,
	HIT_BIND6,
	HIT_SENDMSG4,
	HIT_SENDMSG6,
	HIT_RECVMSG4,
	HIT_RECVMSG6,
	HIT_SOCKOPS,
	HIT_SYSCTL,
	HIT_DEVICE,
	HIT_GETSOCKOPT,
	HIT_SETSOCKOPT,
	HIT_COUNT,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HIT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

BTF_EXPORT(enum hit, hits_key);

static __always_inline int count(__u32 key)
{
	__u64 *slot = bpf_map_lookup_elem(&hits, &key);

	if (slot)
		*slot += 1;
	return 1;
}

SEC("cgroup_skb/ingress")
int count_ingress(struct __sk_buff *skb) { return count(HIT_INGRESS); }

SEC("cgroup_skb/egress")
int count_egress(struct __sk_buff *skb) { return count(HIT_EGRESS); }

SEC("cgroup/sock_create")
int count_sock_create(struct bpf_sock *sk) { return count(HIT_SOCK_CREATE); }

SEC("cgroup/connect4")
int count_connect4(struct bpf_sock_addr *ctx) { return count(HIT_CONNECT4); }

SEC("cgroup/connect6")
int count_connect6(struct bpf_sock_addr *ctx) { return count(HIT_CONNECT6); }

SEC("cgroup/bind4")
int count_bind4(struct bpf_sock_addr *ctx) { return count(HIT_BIND4); }

SEC("cgroup/bind6")
int count_bind6(struct bpf_sock_addr *ctx) { return count(HIT_BIND6); }

SEC("cgroup/sendmsg4")
int count_sendmsg4(struct bpf_sock_addr *ctx) { return count(HIT_SENDMSG4); }

SEC("cgroup/sendmsg6")
int count_sendmsg6(struct bpf_sock_addr *ctx) { return count(HIT_SENDMSG6); }

SEC("cgroup/recvmsg4")
int count_recvmsg4(struct bpf_sock_addr *ctx) { return count(HIT_RECVMSG4); }

SEC("cgroup/recvmsg6")
int count_recvmsg6(struct bpf_sock_addr *ctx) { return count(HIT_RECVMSG6); }

/* Active opens only: each connect() of a TCP socket in the cgroup. */
SEC("sockops")
int count_tcp_connects(struct bpf_sock_ops *ops)
{
	if (ops->op == BPF_SOCK_OPS_TCP_CONNECT_CB)
		count(HIT_SOCKOPS);
	return 1;
}

SEC("cgroup/sysctl")
int count_sysctl_reads(struct bpf_sysctl *ctx)
{
	if (!ctx->write)
		count(HIT_SYSCTL);
	return 1;
}

/* Opens of /dev/null (character device 1:3). */
SEC("cgroup/dev")
int count_dev_null(struct bpf_cgroup_dev_ctx *ctx)
{
	if ((ctx->access_type & 0xffff) == DEVCG_DEV_CHAR && ctx->major == 1 && ctx->minor == 3)
		count(HIT_DEVICE);
	return 1;
}

SEC("cgroup/getsockopt")
int count_getsockopt(struct bpf_sockopt *ctx)
{
	if (ctx->level == SOL_SOCKET && ctx->optname == SO_REUSEADDR)
		count(HIT_GETSOCKOPT);
	return 1;
}

SEC("cgroup/setsockopt")
int count_setsockopt(struct bpf_sockopt *ctx)
{
	if (ctx->level == SOL_SOCKET && ctx->optname == SO_REUSEADDR)
		count(HIT_SETSOCKOPT);
	return 1;
}
