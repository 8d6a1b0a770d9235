/* bpfscope guard: a per-source rate limit in XDP, with allow and deny lists.
 *
 * Order of the checks: non-IP passes; a source on the deny list is dropped (deny wins over allow,
 * so a host can be cut out of an allowed network); a source on the allow list passes unlimited;
 * everything else goes through its source's token bucket. IPv4 sources are limited per /32, IPv6
 * per /64 (one host usually owns a whole /64). A truncated IP header leaves the source address
 * zero: such packets share the bucket of 0.0.0.0 or ::, so they can neither crash nor escape the
 * limit. Rate and burst live in a map (`settings`) so a running guard can change them; only the
 * dry run is frozen at load.
 *
 * Two programs: limit_sources, for kernels with the BPF atomics of Linux 5.12 (compare-and-swap),
 * and limit_sources_locked, the same checks for older kernels, where the bucket update holds a
 * bpf_spin_lock instead. Python loads one of them, chosen by probing (Feature.ATOMICS). */
#include "packet.bpf.h"
#include "stripes.bpf.h"

#define NSEC_PER_SEC 1000000000ULL
#define CAS_ATTEMPTS 4

/* An address prefix: the LPM trie key of both lists and, with prefixlen 128 for an IPv4 host or
 * 64 for an IPv6 network, the key of one source. IPv4 is IPv4-mapped (::ffff:a.b.c.d, prefix
 * 96 + n), so one trie holds both families and the prefix length tells the family. */
struct cidr {
	__u32 prefixlen;
	__u8 addr[16];
};

enum guard_lists {
	LIST_ALLOW = 1,
	LIST_DENY = 2,
};

struct guard_config {
	__u64 rate;     /* packets per second and source; 0 limits nothing */
	__u64 burst;    /* packets a quiet source may send back to back */
	__u32 lists;    /* enum guard_lists: which lists have entries; an empty one costs no lookup */
};

struct source_state {
	__u64 tat;      /* theoretical arrival time (GCRA), bpf_ktime_get_ns() clock */
	__u64 passed;
	__u64 dropped;  /* over the rate: dropped, or in a dry run would have been */
};

struct guard_counts {
	__u64 passed;      /* every XDP_PASS */
	__u64 dropped;     /* every XDP_DROP: over the rate or denied */
	__u64 would_drop;  /* dry run only: what would have been dropped and was passed */
	__u64 allowed;     /* on the allow list: passed without a limit */
	__u64 denied;      /* on the deny list: dropped, or in a dry run counted in would_drop */
};

/* Python reads the list bits from here (the pinned maps' BTF), not from a copy of its own. */
BTF_EXPORT(enum guard_lists, lists);

const volatile bool cfg_dry_run = false;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct guard_config);
} settings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct cidr);
	__type(value, __u8);
} allowed_cidrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct cidr);
	__type(value, __u8);
} denied_cidrs SEC(".maps");

/* LRU: a flood of spoofed sources evicts the quietest buckets instead of growing without bound. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct cidr);
	__type(value, struct source_state);
} sources SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct guard_counts);
} counts SEC(".maps");

/* The token bucket as GCRA: one timestamp instead of tokens and a refill time. Each conforming
 * packet moves the source's theoretical arrival time on by 1/rate; a packet conforms while that
 * time stays within burst/rate of now, which is exactly a bucket of `burst` tokens refilled at
 * `rate`. One u64 of state makes the update a single compare-and-swap, exact when several CPUs
 * see the same source, with no lock (an LRU map cannot hold a bpf_spin_lock) and no per-CPU
 * buckets (they would multiply the rate by the CPU count). */
static __always_inline bool next_tat(__u64 old, __u64 now, __u64 interval, __u64 limit, __u64 *tat)
{
	__u64 t = old > now ? old : now;
	bool pass;

	/* More debt than the limit allows, left by a lower rate or burst before `bpfscope guard
	 * set`: an empty bucket at the new limit, not seconds of waiting at the old one. */
	if (t > now + limit)
		t = now + limit;
	pass = t + interval <= now + limit;
	if (pass)
		t += interval;
	*tat = t;
	return pass;
}

static __always_inline bool conforms(struct source_state *state, __u64 now, __u64 interval, __u64 limit)
{
	for (int i = 0; i < CAS_ATTEMPTS; i++) {
		__u64 old = *(volatile __u64 *)&state->tat;
		__u64 tat;
		bool pass = next_tat(old, now, interval, limit, &tat);

		if (tat == old || __sync_val_compare_and_swap(&state->tat, old, tat) == old)
			return pass;
	}
	/* Lost every race: CPUs were busy with this one source all along, so it floods. */
	return false;
}

static __always_inline struct source_state *source_of(struct cidr *key, __u64 now)
{
	struct source_state *state = bpf_map_lookup_elem(&sources, key);
	struct source_state fresh = { .tat = now };

	if (state)
		return state;
	/* NOEXIST: a CPU that inserted the same source first keeps its state. */
	bpf_map_update_elem(&sources, key, &fresh, BPF_NOEXIST);
	return bpf_map_lookup_elem(&sources, key);
}

/* `locked`, a constant in each program: update the bucket under its stripe's spin lock rather than
 * by compare-and-swap, and the counters with plain adds inside the same lock. */
static __always_inline bool over_limit(struct guard_config *cfg, struct cidr *source, bool locked)
{
	struct source_state *state;
	__u64 now, interval;
	bool pass;

	if (!cfg->rate)
		return false;
	/* The coarse clock (a tick's resolution) costs a fraction of a precise read, which is a
	 * third of this program's time on a VM. Tokens then arrive once a tick instead of smoothly:
	 * the long-run rate is exact and the bucket still never holds more than the burst. The coarse
	 * clock came in Linux 5.11, so the locked form (for kernels before 5.12) reads the precise one. */
	now = locked ? bpf_ktime_get_ns() : bpf_ktime_get_coarse_ns();
	state = source_of(source, now);
	if (!state)
		return false;
	interval = NSEC_PER_SEC / cfg->rate;
	if (locked) {
		struct stripe *stripe = stripe_of(source->addr, source->prefixlen);
		__u64 limit = cfg->burst * interval, tat;

		if (!stripe)
			return false;
		bpf_spin_lock(&stripe->lock);
		pass = next_tat(state->tat, now, interval, limit, &tat);
		state->tat = tat;
		if (pass)
			state->passed += 1;
		else
			state->dropped += 1;
		bpf_spin_unlock(&stripe->lock);
		return !pass;
	}
	if (conforms(state, now, interval, cfg->burst * interval)) {
		__sync_fetch_and_add(&state->passed, 1);
		return false;
	}
	__sync_fetch_and_add(&state->dropped, 1);
	return true;
}

/* The packet's source as a /128 lookup key; IPv4 mapped into IPv6. */
static __always_inline void source_address(struct packet_info *info, struct cidr *key)
{
	__builtin_memset(key, 0, sizeof(*key));
	key->prefixlen = 128;
	if (info->l3 == L3_IPV4) {
		key->addr[10] = 0xff;
		key->addr[11] = 0xff;
		__builtin_memcpy(&key->addr[12], &info->saddr.v4, 4);
	} else {
		__builtin_memcpy(key->addr, info->saddr.v6, 16);
	}
}

static __always_inline int verdict(struct guard_counts *slot, bool drop)
{
	if (drop && !cfg_dry_run) {
		slot->dropped += 1;
		return XDP_DROP;
	}
	if (drop)
		slot->would_drop += 1;
	slot->passed += 1;
	return XDP_PASS;
}

static __always_inline int limit(struct xdp_md *ctx, bool locked)
{
	struct packet_info info;
	struct cidr key;
	__u32 zero = 0;
	struct guard_counts *slot = bpf_map_lookup_elem(&counts, &zero);
	struct guard_config *cfg = bpf_map_lookup_elem(&settings, &zero);

	if (!slot || !cfg)
		return XDP_PASS;
	parse_packet(xdp_data(ctx), xdp_data_end(ctx), &info);
	if (info.l3 != L3_IPV4 && info.l3 != L3_IPV6)
		return verdict(slot, false);
	source_address(&info, &key);
	if ((cfg->lists & LIST_DENY) && bpf_map_lookup_elem(&denied_cidrs, &key)) {
		slot->denied += 1;
		return verdict(slot, true);
	}
	if ((cfg->lists & LIST_ALLOW) && bpf_map_lookup_elem(&allowed_cidrs, &key)) {
		slot->allowed += 1;
		return verdict(slot, false);
	}
	if (info.l3 == L3_IPV6) {
		__builtin_memset(&key.addr[8], 0, 8);
		key.prefixlen = 64;
	}
	return verdict(slot, over_limit(cfg, &key, locked));
}

SEC("xdp")
int limit_sources(struct xdp_md *ctx)
{
	return limit(ctx, false);
}

/* For kernels without BPF_CMPXCHG (before 5.12): a spin lock where limit_sources swaps. */
SEC("xdp")
int limit_sources_locked(struct xdp_md *ctx)
{
	return limit(ctx, true);
}
