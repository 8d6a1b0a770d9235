/* Ring buffer scenarios for tests/kernel/test_ringbuf.py, each driven by BPF_PROG_TEST_RUN (repeat =
 * runs), so none needs a hook or traffic:
 *   emit_events       cfg_per_run records per run into `events`: a known sequence checked field by field
 *   emit_wide         the same into `wide_events`, whose 48-byte slots do not divide the ring size,
 *                     so records straddle the ring's end and are read through its second mapping
 *   emit_short        one 8-byte record into `events` with bpf_ringbuf_output: a record of another size
 *   hold_reservation  keeps a reserved record uncommitted (busy) for cfg_spin_loops while a later
 *                     record is already committed
 * No bpf_loop (Linux 5.17+), so that the tests run on older kernels: the loops are open-coded around
 * calls of global functions, which the verifier checks once each, on their own; a loop then costs it
 * a few instructions per iteration, and cfg_per_run is at most MAX_PER_RUN. */
#include "bpfscope.bpf.h"

#define TEST_MAGIC 0xB0F5C0DE
#define MAX_PER_RUN 10000
#define SPIN_INNER (1 << 12)            /* iterations of spin_inner(): about 12k instructions to verify */
#define SPIN_CHUNK (SPIN_INNER * 64)    /* iterations of spin_chunk(), 64 calls of spin_inner() */
#define MAX_SPIN_CHUNKS 1024

struct test_event {
	__u64 seq;
	__u32 cpu;
	__u32 magic;
	char tag[8];
};

struct wide_event {
	__u64 seq;
	__u64 check;       /* ~seq: a record read half from the wrong place fails it */
	char fill[24];
};

DEFINE_RINGBUF(events, struct test_event, 1 << 16);
DEFINE_RINGBUF(wide_events, struct wide_event, 1 << 16);

const volatile __u32 cfg_per_run = 1;        /* at most MAX_PER_RUN */
const volatile __u32 cfg_discard_every = 0;   /* discard every Nth reserved record (0: never) */
/* rounded down to a multiple of SPIN_CHUNK, at most MAX_SPIN_CHUNKS of them: about 80 ms on the host, as long as the bpf_loop spin was */
const volatile __u32 cfg_spin_loops = 1 << 28;
const volatile bool cfg_no_wakeup = false;     /* submit with BPF_RB_NO_WAKEUP */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} next_seq SEC(".maps");

/* hold_reservation's progress: 1 while its first record is busy, 2 from just before it commits. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} hold_state SEC(".maps");

static __always_inline __u64 *seq_counter(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&next_seq, &zero);
}

/* Not an atomic fetch-and-add, whose result needs Linux 5.12 (BPF_FETCH): the tests run one program
 * at a time, from one thread. */
static __always_inline __u64 next(__u64 *seq)
{
	return (*seq)++;
}

static __always_inline void fill_test_event(struct test_event *event, __u64 seq)
{
	event->seq = seq;
	event->cpu = bpf_get_smp_processor_id();
	event->magic = TEST_MAGIC;
	__builtin_memcpy(event->tag, "bpfscop", 8);
}

/* Global functions (not static, not inlined) take scalars and the context only before Linux 5.12. */
__noinline int emit_event(void)
{
	__u64 *seq = seq_counter();
	struct test_event *event;
	__u64 n;

	if (!seq)
		return 1;
	n = next(seq);
	event = RINGBUF_RESERVE(events);
	if (!event)
		return 0;
	fill_test_event(event, n);
	if (cfg_discard_every && n % cfg_discard_every == 0)
		bpf_ringbuf_discard(event, 0);
	else
		bpf_ringbuf_submit(event, cfg_no_wakeup ? BPF_RB_NO_WAKEUP : 0);
	return 0;
}

SEC("xdp")
int emit_events(struct xdp_md *ctx)
{
	for (__u32 i = 0; i < cfg_per_run && i < MAX_PER_RUN; i++)
		if (emit_event())
			break;
	return XDP_PASS;
}

__noinline int emit_wide_event(void)
{
	__u64 *seq = seq_counter();
	struct wide_event *event;
	__u64 n;

	if (!seq)
		return 1;
	n = next(seq);
	event = RINGBUF_RESERVE(wide_events);
	if (!event)
		return 0;
	event->seq = n;
	event->check = ~n;
	__builtin_memset(event->fill, 0x5a, sizeof(event->fill));
	bpf_ringbuf_submit(event, 0);
	return 0;
}

SEC("xdp")
int emit_wide(struct xdp_md *ctx)
{
	for (__u32 i = 0; i < cfg_per_run && i < MAX_PER_RUN; i++)
		if (emit_wide_event())
			break;
	return XDP_PASS;
}

SEC("xdp")
int emit_short(struct xdp_md *ctx)
{
	__u64 *seq = seq_counter();
	__u64 n;

	if (!seq)
		return XDP_PASS;
	n = next(seq);
	bpf_ringbuf_output(&events, &n, sizeof(n), 0);
	return XDP_PASS;
}

/* SPIN_INNER iterations of nothing that clang may drop: about 1.5 ns each on a 2020s x86. */
__noinline int spin_inner(void)
{
	for (__u32 i = 0; i < SPIN_INNER; i++)
		asm volatile("" ::: "memory");
	return 0;
}

__noinline int spin_chunk(void)
{
	for (__u32 i = 0; i < SPIN_CHUNK / SPIN_INNER; i++)
		spin_inner();
	return 0;
}

static __always_inline void set_hold_state(__u64 state)
{
	__u32 zero = 0;
	__u64 *value = bpf_map_lookup_elem(&hold_state, &zero);

	/* clang 14 has no BPF atomic store; the helper calls around it keep it in place */
	if (value)
		*(volatile __u64 *)value = state;
}

/* Records seq 0 (committed), 1 (held busy) and 2 (committed while 1 is still busy). */
SEC("xdp")
int hold_reservation(struct xdp_md *ctx)
{
	struct test_event *first, *held, *after;

	first = RINGBUF_RESERVE(events);
	if (!first)
		return XDP_ABORTED;
	fill_test_event(first, 0);
	bpf_ringbuf_submit(first, 0);

	held = RINGBUF_RESERVE(events);
	if (!held)
		return XDP_ABORTED;
	after = RINGBUF_RESERVE(events);
	if (!after) {
		bpf_ringbuf_discard(held, 0);
		return XDP_ABORTED;
	}
	fill_test_event(held, 1);
	fill_test_event(after, 2);
	bpf_ringbuf_submit(after, 0);

	set_hold_state(1);
	for (__u32 i = 0; i < cfg_spin_loops / SPIN_CHUNK && i < MAX_SPIN_CHUNKS; i++)
		spin_chunk();
	set_hold_state(2);
	bpf_ringbuf_submit(held, 0);
	return XDP_PASS;
}
