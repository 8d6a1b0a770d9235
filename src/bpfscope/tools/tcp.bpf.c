/* bpfscope tcp: TCP connections opened and accepted (with the handshake's latency), their life
 * (duration, bytes each way), retransmits and drops with the kernel's reason, from stable
 * tracepoints only (no kprobes, which many hardened kernels lack):
 *
 *   sock:inet_sock_set_state   CLOSE→SYN_SENT starts an active open (connect), SYN_SENT→ESTABLISHED
 *                              ends its handshake; SYN_RECV→ESTABLISHED is a passive open (accept);
 *                              →CLOSE ends a connection seen opening: its bytes (tcp_sock's
 *                              bytes_acked and bytes_received, less SYN and FIN) and smoothed RTT
 *                              are read then, with CO-RE from the sock pointer the tracepoint gives.
 *   tcp:tcp_retransmit_skb     a retransmitted segment (err 0 only: what TcpRetransSegs counts,
 *   tcp:tcp_retransmit_synack  segments by the skb's tcp_gso_segs; SYN-ACKs are counted there too)
 *   skb:kfree_skb              a dropped packet with its drop reason, kept when it is TCP
 *
 * Filters (network namespaces by inode, a cgroup v2 id of the socket) run first, in the kernel.
 * Counters are per-CPU; the ring carries only the kinds of events asked for (cfg_events). */
#include "bpfscope.bpf.h"

#define COMM_BYTES 16
#define MAX_NETNS 8             /* --netns given at most this many times */
#define RTT_SLOTS 32            /* log2 microseconds: up to 2^32 us */
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6

/* TCP states (include/net/tcp_states.h, the tracepoints' print formats) */
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_FIN_WAIT2 5
#define TCP_TIME_WAIT 6
#define TCP_CLOSE 7
#define TCP_LAST_ACK 9
#define TCP_CLOSING 11

enum tcp_event_kind {
	EVENT_CONNECT = 0,
	EVENT_ACCEPT = 1,
	EVENT_CLOSE = 2,
	EVENT_RETRANSMIT = 3,
	EVENT_DROP = 4,
};

/* Indexes of the counters map. */
enum tcp_counter {
	COUNT_OPENED = 0,
	COUNT_ACCEPTED = 1,
	COUNT_CLOSED = 2,
	COUNT_RETRANSMITS = 3,  /* segments, as TcpRetransSegs */
	COUNT_FAILED = 4,       /* active opens that ended before ESTABLISHED */
	COUNT_RTT_US = 5,       /* the sum of the RTT samples (the histograms' sum) */
	COUNTERS = 6,
};

struct tcp_event {
	__u64 time_ns;          /* bpf_ktime_get_ns */
	__u64 duration_ns;      /* connect: SYN_SENT to ESTABLISHED; close: the connection's life */
	__u64 bytes_sent;       /* close: bytes_acked */
	__u64 bytes_received;   /* close: bytes_received */
	__u32 netns;            /* the network namespace's inode */
	__u32 pid;              /* connect, and close of a connect: the process that connected */
	__u32 rtt_us;           /* accept: the SYN-ACK's RTT; close: srtt */
	__u32 reason;           /* drop: enum skb_drop_reason; retransmit: segments */
	__u16 sport;
	__u16 dport;
	__u16 family;           /* AF_INET, AF_INET6 */
	__u8 kind;              /* enum tcp_event_kind */
	__u8 state;             /* retransmit: the TCP state; close: the state before CLOSE */
	__u8 saddr[16];         /* IPv4 in the first 4 bytes */
	__u8 daddr[16];
	char comm[COMM_BYTES];  /* as pid */
	__u8 active;            /* close: 1 for a connect, 0 for an accept */
	__u8 pad[7];
};

/* What is kept of a socket from its open to its close. */
struct sock_start {
	__u64 time_ns;
	__u32 pid;
	__u8 active;            /* connect (1) or accept (0) */
	__u8 established;
	__u8 pad[2];
	char comm[COMM_BYTES];
};

struct rtt_key {
	__u8 addr[16];          /* the remote */
	__u16 family;
	__u16 slot;             /* log2 of srtt in microseconds */
	__u32 pad;
};

/* The tracepoints' records (events/<cat>/<name>/format); declared here because they are not kernel
 * types in vmlinux.h but the stable layout of the trace event. */
struct set_state_args {
	__u64 common;
	const void *skaddr;
	int oldstate;
	int newstate;
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u16 protocol;
	__u8 saddr[4];
	__u8 daddr[4];
	__u8 saddr_v6[16];
	__u8 daddr_v6[16];
};

struct retransmit_args {
	__u64 common;
	const void *skbaddr;
	const void *skaddr;
	int state;
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u8 saddr[4];
	__u8 daddr[4];
	__u8 saddr_v6[16];
	__u8 daddr_v6[16];
	int err;
};

struct synack_args {
	__u64 common;
	const void *skaddr;
	const void *req;
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u8 saddr[4];
	__u8 daddr[4];
	__u8 saddr_v6[16];
	__u8 daddr_v6[16];
};

struct kfree_skb_args {
	__u64 common;
	void *skbaddr;
	void *location;
	void *rx_sk;
	__u16 protocol;         /* skb->protocol in host order */
	__u16 pad;
	__u32 reason;
};

const volatile __u32 cfg_netns[MAX_NETNS] = {};         /* inodes; all 0: every namespace */
const volatile __u32 cfg_netns_count = 0;
const volatile __u64 cfg_cgroup_id = 0;                 /* 0: every cgroup */
const volatile __u32 cfg_events = 0x1f;                 /* bit per enum tcp_event_kind: into the ring */

DEFINE_RINGBUF(events, struct tcp_event, 1 << 22);    /* Python sets the size */
BTF_EXPORT(enum tcp_event_kind, kind);
BTF_EXPORT(struct rtt_key, rtt_key);

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);     /* enum skb_drop_reason */
	__type(value, __u64);
} drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);     /* remotes × slots; a full map counts the sample as lost */
	__type(key, struct rtt_key);
	__type(value, __u64);
} rtts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);     /* struct sock * */
	__type(value, struct sock_start);
} socks SEC(".maps");

static __always_inline void add(__u32 counter, __u64 n)
{
	__u64 *count = bpf_map_lookup_elem(&counters, &counter);

	if (count)
		*count += n;    /* per-CPU slot: no atomic needed */
}

static __always_inline void count_lost(void)
{
	__u32 zero = 0;
	__u64 *lost = bpf_map_lookup_elem(&events_lost, &zero);

	if (lost)
		*lost += 1;
}

static __always_inline __u32 sock_netns(const struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

static __always_inline bool wanted_netns(__u32 inum)
{
	if (!cfg_netns_count)
		return true;
	for (__u32 i = 0; i < MAX_NETNS; i++) {
		if (i >= cfg_netns_count)
			break;
		if (cfg_netns[i] == inum)
			return true;
	}
	return false;
}

static __always_inline bool wanted_cgroup(const struct sock *sk)
{
	if (!cfg_cgroup_id)
		return true;
	if (!sk)
		return false;
	return BPF_CORE_READ(sk, sk_cgrp_data.cgroup, kn, id) == cfg_cgroup_id;
}

static __always_inline bool wanted_sock(const struct sock *sk, __u32 *netns)
{
	*netns = sock_netns(sk);
	return wanted_netns(*netns) && wanted_cgroup(sk);
}

static __always_inline struct tcp_event *reserve(enum tcp_event_kind kind, __u32 netns)
{
	struct tcp_event *e;

	if (!(cfg_events & (1U << kind)))
		return NULL;
	e = RINGBUF_RESERVE(events);
	if (!e)
		return NULL;
	__builtin_memset(e, 0, sizeof(*e));
	e->time_ns = bpf_ktime_get_ns();
	e->kind = kind;
	e->netns = netns;
	return e;
}

static __always_inline void addresses(struct tcp_event *e, __u16 family, const __u8 *saddr4, const __u8 *daddr4,
				      const __u8 *saddr6, const __u8 *daddr6)
{
	/* read, not copied: the verifier refuses loads from the context at an offset it computed */
	e->family = family;
	if (family == AF_INET6) {
		bpf_probe_read_kernel(e->saddr, 16, saddr6);
		bpf_probe_read_kernel(e->daddr, 16, daddr6);
	} else {
		bpf_probe_read_kernel(e->saddr, 4, saddr4);
		bpf_probe_read_kernel(e->daddr, 4, daddr4);
	}
}

static __always_inline void state_event(struct tcp_event *e, const struct set_state_args *ctx)
{
	e->sport = ctx->sport;
	e->dport = ctx->dport;
	addresses(e, ctx->family, ctx->saddr, ctx->daddr, ctx->saddr_v6, ctx->daddr_v6);
}

static __always_inline void count_rtt(const struct set_state_args *ctx, __u32 rtt_us)
{
	struct rtt_key key = { .family = ctx->family, .slot = log2_u32(rtt_us) };
	__u64 one = 1, *count;

	if (ctx->family == AF_INET6)
		bpf_probe_read_kernel(key.addr, 16, ctx->daddr_v6);
	else
		bpf_probe_read_kernel(key.addr, 4, ctx->daddr);
	add(COUNT_RTT_US, rtt_us);
	count = bpf_map_lookup_elem(&rtts, &key);
	if (count)
		*count += 1;
	else if (bpf_map_update_elem(&rtts, &key, &one, BPF_NOEXIST))
		count_lost();   /* the map is full: that sample is lost */
}

static __always_inline void connecting(__u64 sk)
{
	struct sock_start start = { .time_ns = bpf_ktime_get_ns(), .active = 1 };

	/* connect() sets SYN_SENT in the calling process: its pid and comm are the connection's */
	start.pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(start.comm, sizeof(start.comm));
	if (bpf_map_update_elem(&socks, &sk, &start, BPF_ANY))
		count_lost();
}

static __always_inline void established(const struct set_state_args *ctx, const struct sock *sk, __u32 netns)
{
	__u64 key = (__u64)sk, now = bpf_ktime_get_ns();
	struct sock_start *start = bpf_map_lookup_elem(&socks, &key);
	struct tcp_event *e;

	if (ctx->oldstate == TCP_SYN_SENT) {
		add(COUNT_OPENED, 1);
		if (!start)
			return;         /* connect() came before the tool was attached */
		start->established = 1;
		e = reserve(EVENT_CONNECT, netns);
		if (!e)
			return;
		e->duration_ns = now - start->time_ns;
		e->pid = start->pid;
		__builtin_memcpy(e->comm, start->comm, COMM_BYTES);
	} else {
		/* The child of a listener: its first RTT sample is the SYN-ACK's, taken just before */
		struct sock_start accepted = { .time_ns = now, .established = 1 };
		__u32 rtt_us = BPF_CORE_READ((struct tcp_sock *)sk, srtt_us) >> 3;

		add(COUNT_ACCEPTED, 1);
		if (bpf_map_update_elem(&socks, &key, &accepted, BPF_ANY))
			count_lost();
		e = reserve(EVENT_ACCEPT, netns);
		if (!e)
			return;
		e->rtt_us = rtt_us;
	}
	state_event(e, ctx);
	bpf_ringbuf_submit(e, 0);
}

/* Bytes of data the peer acknowledged: bytes_acked counts sequence space, so an active open's SYN
 * and our FIN, once acknowledged, are one byte each in it. Our FIN was acknowledged when the socket
 * closes from a state after it with nothing left unacknowledged. */
static __always_inline __u64 data_sent(const struct set_state_args *ctx, const struct tcp_sock *tp, __u8 active)
{
	__u64 acked = BPF_CORE_READ(tp, bytes_acked);
	int old = ctx->oldstate;
	bool fin_acked = (old == TCP_FIN_WAIT2 || old == TCP_LAST_ACK || old == TCP_CLOSING || old == TCP_TIME_WAIT) &&
			 BPF_CORE_READ(tp, snd_una) == BPF_CORE_READ(tp, write_seq);

	return acked - active - fin_acked;
}

/* Bytes of data received in order: bytes_received counts the peer's FIN too, once this socket took
 * it in (tcp_fin sets SOCK_DONE; an orphan that went to TIME_WAIT before it came never does). */
static __always_inline __u64 data_received(const struct sock *sk, const struct tcp_sock *tp)
{
	__u64 received = BPF_CORE_READ(tp, bytes_received);
	unsigned long flags = BPF_CORE_READ(sk, __sk_common.skc_flags);

	return received - ((flags >> bpf_core_enum_value(enum sock_flags, SOCK_DONE)) & 1);
}

static __always_inline void closed(const struct set_state_args *ctx, const struct sock *sk, __u32 netns)
{
	__u64 key = (__u64)sk;
	struct sock_start *start = bpf_map_lookup_elem(&socks, &key);
	const struct tcp_sock *tp = (const struct tcp_sock *)sk;
	struct tcp_event *e;
	__u32 rtt_us;

	if (!start)
		return;         /* opened before the tool was attached, or never (a listener) */
	if (!start->established) {
		add(COUNT_FAILED, 1);
		bpf_map_delete_elem(&socks, &key);
		return;
	}
	add(COUNT_CLOSED, 1);
	rtt_us = BPF_CORE_READ(tp, srtt_us) >> 3;
	count_rtt(ctx, rtt_us);
	e = reserve(EVENT_CLOSE, netns);
	if (e) {
		e->duration_ns = e->time_ns - start->time_ns;
		e->bytes_sent = data_sent(ctx, tp, start->active);
		e->bytes_received = data_received(sk, tp);
		e->rtt_us = rtt_us;
		e->state = ctx->oldstate;
		e->active = start->active;
		e->pid = start->pid;
		__builtin_memcpy(e->comm, start->comm, COMM_BYTES);
		state_event(e, ctx);
		bpf_ringbuf_submit(e, 0);
	}
	bpf_map_delete_elem(&socks, &key);
}

SEC("tracepoint/sock/inet_sock_set_state")
int trace_state(struct set_state_args *ctx)
{
	const struct sock *sk = ctx->skaddr;
	__u32 netns;

	if (ctx->protocol != IPPROTO_TCP || !wanted_sock(sk, &netns))
		return 0;
	if (ctx->newstate == TCP_SYN_SENT)
		connecting((__u64)sk);
	else if (ctx->newstate == TCP_ESTABLISHED &&
		 (ctx->oldstate == TCP_SYN_SENT || ctx->oldstate == TCP_SYN_RECV))
		established(ctx, sk, netns);
	else if (ctx->newstate == TCP_CLOSE)
		closed(ctx, sk, netns);
	return 0;
}

static __always_inline void retransmitted(__u32 netns, __u32 segs, __u8 state, __u16 sport, __u16 dport,
					  __u16 family, const __u8 *saddr4, const __u8 *daddr4,
					  const __u8 *saddr6, const __u8 *daddr6)
{
	struct tcp_event *e;

	add(COUNT_RETRANSMITS, segs);
	e = reserve(EVENT_RETRANSMIT, netns);
	if (!e)
		return;
	e->reason = segs;
	e->state = state;
	e->sport = sport;
	e->dport = dport;
	addresses(e, family, saddr4, daddr4, saddr6, daddr6);
	bpf_ringbuf_submit(e, 0);
}

SEC("tracepoint/tcp/tcp_retransmit_skb")
int trace_retransmit(struct retransmit_args *ctx)
{
	const struct sk_buff *skb = ctx->skbaddr;
	const struct tcp_skb_cb *cb = (const struct tcp_skb_cb *)&skb->cb;
	__u32 netns;

	/* a failed attempt (err < 0) sent nothing, and TcpRetransSegs does not count it */
	if (ctx->err || !wanted_sock(ctx->skaddr, &netns))
		return 0;
	retransmitted(netns, BPF_CORE_READ(cb, tcp_gso_segs), ctx->state, ctx->sport, ctx->dport, ctx->family,
		      ctx->saddr, ctx->daddr, ctx->saddr_v6, ctx->daddr_v6);
	return 0;
}

SEC("tracepoint/tcp/tcp_retransmit_synack")
int trace_retransmit_synack(struct synack_args *ctx)
{
	__u32 netns;

	if (!wanted_sock(ctx->skaddr, &netns))
		return 0;
	retransmitted(netns, 1, TCP_SYN_RECV, ctx->sport, ctx->dport, ctx->family,
		      ctx->saddr, ctx->daddr, ctx->saddr_v6, ctx->daddr_v6);
	return 0;
}

/* The TCP header's ports of a dropped packet whose network header says TCP; false otherwise. */
static __always_inline bool tcp_packet(const struct sk_buff *skb, __u16 protocol, struct tcp_event *out)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 network = BPF_CORE_READ(skb, network_header);
	__u16 transport = BPF_CORE_READ(skb, transport_header);
	__u16 ports[2];

	if (protocol == ETH_P_IP) {
		struct iphdr ip;

		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + network) || ip.protocol != IPPROTO_TCP)
			return false;
		out->family = AF_INET;
		__builtin_memcpy(out->saddr, &ip.saddr, 4);
		__builtin_memcpy(out->daddr, &ip.daddr, 4);
		if (transport == (__u16)~0U)    /* not set yet: right after the IPv4 header */
			transport = network + ip.ihl * 4;
	} else if (protocol == ETH_P_IPV6) {
		struct ipv6hdr ip6;

		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + network) || ip6.nexthdr != IPPROTO_TCP)
			return false;
		out->family = AF_INET6;
		__builtin_memcpy(out->saddr, &ip6.saddr, 16);
		__builtin_memcpy(out->daddr, &ip6.daddr, 16);
		if (transport == (__u16)~0U)
			transport = network + sizeof(ip6);
	} else {
		return false;
	}
	if (!bpf_probe_read_kernel(ports, sizeof(ports), head + transport)) {
		out->sport = bpf_ntohs(ports[0]);
		out->dport = bpf_ntohs(ports[1]);
	}
	return true;
}

SEC("tracepoint/skb/kfree_skb")
int trace_drop(struct kfree_skb_args *ctx)
{
	const struct sk_buff *skb = ctx->skbaddr;
	const struct sock *sk = BPF_CORE_READ(skb, sk);
	struct tcp_event packet = {};
	struct tcp_event *e;
	__u64 one = 1, *count;
	__u32 netns, reason = ctx->reason;

	if (ctx->protocol != ETH_P_IP && ctx->protocol != ETH_P_IPV6)
		return 0;
	/* the namespace of the socket it belonged to, else of the device it came in on or was going out of */
	netns = sk ? sock_netns(sk) : BPF_CORE_READ(skb, dev, nd_net.net, ns.inum);
	if (!wanted_netns(netns) || !wanted_cgroup(sk) || !tcp_packet(skb, ctx->protocol, &packet))
		return 0;
	count = bpf_map_lookup_elem(&drops, &reason);
	if (count)
		*count += 1;
	else if (bpf_map_update_elem(&drops, &reason, &one, BPF_NOEXIST))
		count_lost();
	e = reserve(EVENT_DROP, netns);
	if (!e)
		return 0;
	e->reason = reason;
	e->family = packet.family;
	e->sport = packet.sport;
	e->dport = packet.dport;
	__builtin_memcpy(e->saddr, packet.saddr, 16);
	__builtin_memcpy(e->daddr, packet.daddr, 16);
	bpf_ringbuf_submit(e, 0);
	return 0;
}
