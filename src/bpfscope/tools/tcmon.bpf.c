/* bpfscope tcmon: port scans, SYN floods, denied addresses and ports, and payload patterns, seen
 * from tc on ingress and egress of one interface and streamed as typed events through a ring
 * buffer. Every packet passes unchanged (TC_ACT_UNSPEC): this watches, it never filters.
 *
 * The kernel does the detecting; Python only writes the rules and prints what arrives. Knobs
 * that never change while it runs (thresholds, window) are .rodata; the rules, which SIGHUP
 * replaces, live in maps that Python rewrites in place, so the programs stay attached.
 *
 * Addresses are IPv4-mapped IPv6 (::ffff:a.b.c.d) everywhere, as in guard: one LPM trie and one
 * key type serve both families.
 *
 * Two pairs of programs: watch_ingress/watch_egress update the per-source state with the BPF atomics
 * of Linux 5.12 (compare-and-swap, fetch-or, exchange); the _locked pair does the same checks under a
 * bpf_spin_lock (stripes.bpf.h) for older kernels. Python loads one pair, chosen by probing. */
#include "packet.bpf.h"
#include "stripes.bpf.h"

/* TC_ACT_UNSPEC (TCX_NEXT on tcx): the verdict is left to the programs after this one, or the
 * default (pass): a watcher must not end the chain before a network plugin's own programs. */
#define TC_ACT_UNSPEC (-1)
#define SCAN_BITS 1024                  /* distinct-port bitmap per source: 16 u64 words */
#define SCAN_WORDS (SCAN_BITS / 64)
#define MAX_PATTERNS 16
#define PATTERN_BYTES 16
#define STRIPE_SCAN 1                   /* stripe_of's salt for each kind of state */
#define STRIPE_SYN 2
#define STRIPE_LIMIT 3
_Static_assert((PATTERN_BYTES & (PATTERN_BYTES - 1)) == 0, "check_patterns masks lengths");

enum event_kind {
	EVENT_PORT_SCAN = 0,
	EVENT_SYN_FLOOD = 1,
	EVENT_DENIED_ADDRESS = 2,
	EVENT_DENIED_PORT = 3,
	EVENT_PATTERN = 4,
	EVENT_KIND_COUNT,
};

enum direction {
	DIRECTION_INGRESS = 0,
	DIRECTION_EGRESS = 1,
};

struct tcmon_event {
	__u64 time_ns;          /* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
	__u8 saddr[16];         /* IPv4-mapped for IPv4 */
	__u8 daddr[16];
	__u16 sport;            /* host byte order; 0 without TCP/UDP */
	__u16 dport;
	__u8 kind;              /* enum event_kind */
	__u8 direction;         /* enum direction */
	__u8 proto;             /* IPPROTO_* */
	__u8 pad;
	__u32 rule;             /* denied-*, pattern: the rule's number (Python's index into its rules) */
	__u32 count;            /* port-scan: distinct ports; syn-flood: SYNs without a completed
	                         * handshake; denied-*, pattern: events suppressed since the last one */
};

struct cidr {
	__u32 prefixlen;
	__u8 addr[16];
};

struct port_rule {
	__u32 rule;
	__u32 protocols;        /* bit 0: TCP, bit 1: UDP */
};

/* A prefix of at most 16 bytes at the start of a TCP or UDP payload, as two masked words: the
 * comparison is four 64-bit operations, whatever the pattern's length. */
struct pattern {
	__u64 value[2];         /* the bytes, zero-padded */
	__u64 mask[2];          /* 0xff for each byte of the pattern, 0 after it */
	__u16 port;             /* host byte order; either end of the packet; 0: any port */
	__u8 proto;             /* IPPROTO_TCP or IPPROTO_UDP; 0: both */
	__u8 len;               /* 0 ends the list */
	__u32 rule;
};

struct scan_state {
	__u64 window_start;     /* ns */
	__u64 ports;            /* distinct ports (bits set) in this window; u64 for the atomics */
	__u64 seen[SCAN_WORDS];
};

struct syn_state {
	__u64 window_start;
	__u64 syns;
	__u64 completed;        /* handshakes ended: completed by the client or refused by a RST */
	__u64 reported;         /* a syn-flood event went out in this window; u64 for the atomics */
};

struct handshake_key {
	__u8 client[16];
	__u8 server[16];
	__u16 client_port;
	__u16 server_port;
};

struct limit_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 kind;
	__u32 rule;
};

struct limit_state {
	__u64 last_event_ns;
	__u64 suppressed;       /* since last_event_ns */
};

struct tcmon_counts {
	__u64 packets;
	__u64 events[EVENT_KIND_COUNT]; /* reserved in the ring; a full ring counts in events_lost */
	__u64 suppressed;               /* denied-* and pattern events held back by the rate limit */
};

const volatile __u64 cfg_window_ns = 10ULL * 1000000000;
const volatile __u32 cfg_scan_ports = 32;      /* more distinct ports than this in a window: a scan */
const volatile __u64 cfg_syn_limit = 1000;     /* more half-open SYNs than this per window: a flood */
const volatile __u64 cfg_event_interval_ns = 10ULL * 1000000000;

DEFINE_RINGBUF(events, struct tcmon_event, 1 << 18);
BTF_EXPORT(enum event_kind, kind);

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct cidr);
	__type(value, __u32);           /* rule number */
} denied_cidrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u16);             /* host byte order */
	__type(value, struct port_rule);
} denied_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_PATTERNS);
	__type(key, __u32);
	__type(value, struct pattern);
} patterns SEC(".maps");

/* LRU maps throughout: a flood of spoofed sources evicts the oldest state instead of growing. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct cidr);       /* the source, prefixlen 128 */
	__type(value, struct scan_state);
} scanners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct cidr);       /* the destination, prefixlen 128 */
	__type(value, struct syn_state);
} syn_targets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct handshake_key);
	__type(value, __u8);
} handshakes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct limit_key);
	__type(value, struct limit_state);
} limits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tcmon_counts);
} counts SEC(".maps");

/* The packet as the checks see it: addresses mapped, ports in host order. */
struct view {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 tcp_flags;
	__u8 direction;
	__u16 payload_off;
	__u16 payload_len;
	__u64 now;
	struct tcmon_counts *counts;
};

static __always_inline void map_address(__u8 *out, struct packet_info *info, bool source)
{
	if (info->l3 == L3_IPV4) {
		__builtin_memset(out, 0, 10);
		out[10] = 0xff;
		out[11] = 0xff;
		__builtin_memcpy(&out[12], source ? &info->saddr.v4 : &info->daddr.v4, 4);
	} else {
		__builtin_memcpy(out, source ? info->saddr.v6 : info->daddr.v6, 16);
	}
}

static __always_inline void emit(struct view *v, enum event_kind kind, __u32 rule, __u64 count)
{
	struct tcmon_event *event = RINGBUF_RESERVE(events);

	if (!event)
		return;
	event->time_ns = v->now;
	__builtin_memcpy(event->saddr, v->saddr, 16);
	__builtin_memcpy(event->daddr, v->daddr, 16);
	event->sport = v->sport;
	event->dport = v->dport;
	event->kind = kind;
	event->direction = v->direction;
	event->proto = v->proto;
	event->pad = 0;
	event->rule = rule;
	event->count = count > 0xffffffff ? 0xffffffff : count;
	if (kind < EVENT_KIND_COUNT)
		v->counts->events[kind] += 1;
	bpf_ringbuf_submit(event, 0);
}

/* Starts a new window when the current one has ended. The compare-and-swap lets one CPU do it;
 * the counters it then clears may miss an increment another CPU makes meanwhile, which only
 * makes a window count a packet less. Returns true for the CPU that started the window. */
static __always_inline bool roll_window(__u64 *window_start, __u64 now)
{
	__u64 start = *(volatile __u64 *)window_start;

	if (now - start < cfg_window_ns)
		return false;
	return __sync_val_compare_and_swap(window_start, start, now) == start;
}

/* Port scan: distinct ports one source tries to open within a window. What counts as a try: a
 * TCP segment without ACK other than a RST (SYN, FIN, NULL and Xmas probes; no established
 * traffic carries one), and a UDP datagram to a port below its source port (the service side of
 * the usual ephemeral → well-known convention, so a DNS server's answers to many ephemeral ports
 * are no scan). Ports go into a 1024-bit bitmap by their low bits: a run of up to 1024 consecutive
 * ports counts exactly, and a collision can only undercount. One event when the count passes
 * cfg_scan_ports: the atomic add hands that exact number to one CPU only. */
static __always_inline void clear_scan(struct scan_state *state)
{
	for (int i = 0; i < SCAN_WORDS; i++)
		state->seen[i] = 0;
	state->ports = 0;
}

static __always_inline void check_scan(struct view *v, bool locked)
{
	struct scan_state *state, fresh = {};
	struct cidr key = { .prefixlen = 128 };
	__u32 word = (v->dport >> 6) & (SCAN_WORDS - 1);
	__u64 bit = 1ULL << (v->dport & 63), old;
	__u64 seen = 0;

	if (v->proto == IPPROTO_TCP) {
		if (v->tcp_flags & (0x10 | 0x04))   /* ACK, RST */
			return;
	} else if (v->proto != IPPROTO_UDP || v->dport >= v->sport) {
		return;
	}
	__builtin_memcpy(key.addr, v->saddr, 16);
	fresh.window_start = v->now;
	state = map_lookup_or_init(&scanners, &key, &fresh);
	if (!state)
		return;
	if (locked) {
		struct stripe *stripe = stripe_of(key.addr, STRIPE_SCAN);

		if (!stripe)
			return;
		bpf_spin_lock(&stripe->lock);
		if (v->now - state->window_start >= cfg_window_ns) {
			state->window_start = v->now;
			clear_scan(state);
		}
		old = state->seen[word];
		state->seen[word] = old | bit;
		if (!(old & bit))
			state->ports += 1;
		seen = state->ports;
		bpf_spin_unlock(&stripe->lock);
	} else {
		if (roll_window(&state->window_start, v->now))
			clear_scan(state);
		old = __sync_fetch_and_or(&state->seen[word], bit);
		if (!(old & bit))
			seen = __sync_fetch_and_add(&state->ports, 1) + 1;
	}
	if (!(old & bit) && seen == cfg_scan_ports + 1)
		emit(v, EVENT_PORT_SCAN, 0, seen);
}

static __always_inline void handshake_of(struct view *v, struct handshake_key *key)
{
	__builtin_memcpy(key->client, v->saddr, 16);
	__builtin_memcpy(key->server, v->daddr, 16);
	key->client_port = v->sport;
	key->server_port = v->dport;
}

/* SYN flood: per destination, SYNs against handshakes that ended within a window. A SYN (without
 * ACK) enters `handshakes`; it leaves, counted as ended, on the client's first ACK without SYN (the
 * handshake completed) or on the server's RST (the port is closed: refused at once, it holds no
 * half-open slot, so a connect scan of closed ports is a scan and not a flood). The server's
 * SYN-ACK ends nothing: under a spoofed flood the server answers every SYN. One event per
 * destination and window, when SYNs minus ended handshakes pass cfg_syn_limit
 * (--syn-rate × --window). */
static __always_inline void end_handshake(struct handshake_key *hs, __u8 *server)
{
	struct cidr key = { .prefixlen = 128 };
	struct syn_state *state;

	/* Every ACK of an established connection asks here; only a handshake's first one is found. */
	if (bpf_map_delete_elem(&handshakes, hs))
		return;
	__builtin_memcpy(key.addr, server, 16);
	state = bpf_map_lookup_elem(&syn_targets, &key);
	if (state)
		__sync_fetch_and_add(&state->completed, 1);
}

static __always_inline void clear_syns(struct syn_state *state)
{
	state->syns = 0;
	state->completed = 0;
	state->reported = 0;
}

static __always_inline __u64 half_open_of(__u64 syns, __u64 completed)
{
	return syns > completed ? syns - completed : 0;
}

static __always_inline void check_syn_flood(struct view *v, bool locked)
{
	struct handshake_key hs;
	struct cidr key = { .prefixlen = 128 };
	struct syn_state *state, fresh = {};
	__u8 one = 1;
	__u64 half_open;
	bool report;
	__u8 flags = v->tcp_flags & (0x02 | 0x10 | 0x04);   /* SYN, ACK, RST */

	if (v->proto != IPPROTO_TCP)
		return;
	__builtin_memset(&hs, 0, sizeof(hs));
	if (flags & 0x04) {     /* RST, from the server: the reverse of the client's SYN */
		__builtin_memcpy(hs.client, v->daddr, 16);
		__builtin_memcpy(hs.server, v->saddr, 16);
		hs.client_port = v->dport;
		hs.server_port = v->sport;
		end_handshake(&hs, v->saddr);
		return;
	}
	if (flags != 0x02 && flags != 0x10)
		return;
	handshake_of(v, &hs);
	if (flags == 0x10) {
		end_handshake(&hs, v->daddr);
		return;
	}
	bpf_map_update_elem(&handshakes, &hs, &one, BPF_ANY);
	__builtin_memcpy(key.addr, v->daddr, 16);
	fresh.window_start = v->now;
	state = map_lookup_or_init(&syn_targets, &key, &fresh);
	if (!state)
		return;
	if (locked) {
		struct stripe *stripe = stripe_of(key.addr, STRIPE_SYN);

		if (!stripe)
			return;
		bpf_spin_lock(&stripe->lock);
		if (v->now - state->window_start >= cfg_window_ns) {
			state->window_start = v->now;
			clear_syns(state);
		}
		state->syns += 1;
		half_open = half_open_of(state->syns, state->completed);
		report = half_open > cfg_syn_limit && !state->reported;
		if (report)
			state->reported = 1;
		bpf_spin_unlock(&stripe->lock);
	} else {
		__u64 syns;

		if (roll_window(&state->window_start, v->now))
			clear_syns(state);
		syns = __sync_fetch_and_add(&state->syns, 1) + 1;
		half_open = half_open_of(syns, *(volatile __u64 *)&state->completed);
		report = half_open > cfg_syn_limit && !*(volatile __u64 *)&state->reported &&
			 __sync_val_compare_and_swap(&state->reported, 0, 1) == 0;
	}
	if (report)
		emit(v, EVENT_SYN_FLOOD, 0, half_open);
}

/* Deny and pattern hits could come at line rate; a ring full of one flood would hide
 * everything else. So at most one event per (source, destination, kind, rule) every
 * cfg_event_interval_ns: the first hit goes out at once, later ones within the interval are
 * counted in the pair's `suppressed` (and the global counter), and the next event that goes out
 * carries how many were held back before it. The compare-and-swap on last_event_ns (or the lock)
 * lets one CPU send per interval. */
static __always_inline void emit_limited(struct view *v, enum event_kind kind, __u32 rule, bool locked)
{
	struct limit_key key;
	struct limit_state *state, fresh = {};
	__u64 last, held = 0;
	bool send;

	__builtin_memset(&key, 0, sizeof(key));
	__builtin_memcpy(key.saddr, v->saddr, 16);
	__builtin_memcpy(key.daddr, v->daddr, 16);
	key.kind = kind;
	key.rule = rule;
	state = bpf_map_lookup_elem(&limits, &key);
	if (!state) {
		fresh.last_event_ns = v->now;
		if (bpf_map_update_elem(&limits, &key, &fresh, BPF_NOEXIST) == 0) {
			emit(v, kind, rule, 0);
			return;
		}
		state = bpf_map_lookup_elem(&limits, &key);
		if (!state)
			return;
	}
	if (locked) {
		struct stripe *stripe = stripe_of(key.saddr, STRIPE_LIMIT ^ (kind << 2) ^ (rule << 5));

		if (!stripe)
			return;
		bpf_spin_lock(&stripe->lock);
		send = v->now - state->last_event_ns >= cfg_event_interval_ns;
		if (send) {
			state->last_event_ns = v->now;
			held = state->suppressed;
			state->suppressed = 0;
		} else {
			state->suppressed += 1;
		}
		bpf_spin_unlock(&stripe->lock);
	} else {
		last = *(volatile __u64 *)&state->last_event_ns;
		send = v->now - last >= cfg_event_interval_ns &&
		       __sync_val_compare_and_swap(&state->last_event_ns, last, v->now) == last;
		if (send)
			held = __sync_lock_test_and_set(&state->suppressed, 0);
		else
			__sync_fetch_and_add(&state->suppressed, 1);
	}
	if (send)
		emit(v, kind, rule, held);
	else
		v->counts->suppressed += 1;
}

static __always_inline void check_denied(struct view *v, bool locked)
{
	struct cidr key = { .prefixlen = 128 };
	struct port_rule *port;
	__u32 *rule;
	__u32 protocol_bit;

	__builtin_memcpy(key.addr, v->saddr, 16);
	rule = bpf_map_lookup_elem(&denied_cidrs, &key);
	if (!rule) {
		__builtin_memcpy(key.addr, v->daddr, 16);
		rule = bpf_map_lookup_elem(&denied_cidrs, &key);
	}
	if (rule) {
		emit_limited(v, EVENT_DENIED_ADDRESS, *rule, locked);
		return;
	}
	if (v->proto == IPPROTO_TCP)
		protocol_bit = 1;
	else if (v->proto == IPPROTO_UDP)
		protocol_bit = 2;
	else
		return;
	port = bpf_map_lookup_elem(&denied_ports, &v->dport);
	if (!port || !(port->protocols & protocol_bit))
		port = bpf_map_lookup_elem(&denied_ports, &v->sport);
	if (port && (port->protocols & protocol_bit))
		emit_limited(v, EVENT_DENIED_PORT, port->rule, locked);
}

struct match_ctx {
	struct view *v;
	__u64 head[2];          /* the payload's first 16 bytes, zero-padded */
	__u32 available;        /* how many of them the payload has */
};

static __always_inline int match_pattern(__u32 index, struct match_ctx *m, bool locked)
{
	struct view *v = m->v;
	struct pattern *p = bpf_map_lookup_elem(&patterns, &index);

	if (!p || !p->len)
		return 1;       /* the list ends */
	if (p->len > m->available || (p->proto && p->proto != v->proto) ||
	    (p->port && p->port != v->dport && p->port != v->sport))
		return 0;
	if (((m->head[0] ^ p->value[0]) & p->mask[0]) || ((m->head[1] ^ p->value[1]) & p->mask[1]))
		return 0;
	emit_limited(v, EVENT_PATTERN, p->rule, locked);
	return 0;
}

static __always_inline void check_patterns(struct __sk_buff *ctx, struct view *v, bool locked)
{
	struct match_ctx m = { .v = v };
	__u32 available = v->payload_len;

	if (!available)
		return;
	if (available > PATTERN_BYTES)
		available = PATTERN_BYTES;
	/* 1..PATTERN_BYTES, written so that every verifier sees the bounds: clang tests a copy of
	 * the register, and a 6.1 verifier then takes a length of 0 as possible. */
	available = ((available - 1) & (PATTERN_BYTES - 1)) + 1;
	/* bpf_skb_load_bytes, not a pointer: on egress a socket's payload is often in page
	 * fragments, past the linear data. */
	if (bpf_skb_load_bytes(ctx, v->payload_off, m.head, available))
		return;
	m.available = available;
	for (__u32 i = 0; i < MAX_PATTERNS; i++)
		if (match_pattern(i, &m, locked))
			break;
}

/* `locked`, a constant in each program: the state's updates under spin locks instead of atomics. */
static __always_inline void watch(struct __sk_buff *ctx, enum direction direction, bool locked)
{
	struct skb_bounds *skb = (struct skb_bounds *)ctx;
	struct packet_info info;
	struct view v;
	__u32 zero = 0;

	v.counts = bpf_map_lookup_elem(&counts, &zero);
	if (!v.counts)
		return;
	v.counts->packets += 1;
	parse_packet((void *)(long)skb->data, (void *)(long)skb->data_end, &info);
	if ((info.l3 != L3_IPV4 && info.l3 != L3_IPV6) || !info.ip_proto)
		return;
	map_address(v.saddr, &info, true);
	map_address(v.daddr, &info, false);
	v.sport = bpf_ntohs(info.sport);
	v.dport = bpf_ntohs(info.dport);
	v.proto = info.ip_proto;
	v.tcp_flags = info.tcp_flags;
	v.direction = direction;
	v.payload_off = info.payload_off;
	v.payload_len = info.payload_len;
	v.now = bpf_ktime_get_ns();

	check_denied(&v, locked);
	if (info.fragment)
		return;         /* no transport header: no ports, no flags, no payload start */
	check_scan(&v, locked);
	check_syn_flood(&v, locked);
	check_patterns(ctx, &v, locked);
}

SEC("tc")
int watch_ingress(struct __sk_buff *ctx)
{
	watch(ctx, DIRECTION_INGRESS, false);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int watch_egress(struct __sk_buff *ctx)
{
	watch(ctx, DIRECTION_EGRESS, false);
	return TC_ACT_UNSPEC;
}

/* For kernels without BPF atomics (before 5.12): spin locks where the pair above uses atomics. */
SEC("tc")
int watch_ingress_locked(struct __sk_buff *ctx)
{
	watch(ctx, DIRECTION_INGRESS, true);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int watch_egress_locked(struct __sk_buff *ctx)
{
	watch(ctx, DIRECTION_EGRESS, true);
	return TC_ACT_UNSPEC;
}
