/* Ring buffer scenarios for tests/kernel/test_ringbuf.py, each driven by BPF_PROG_TEST_RUN (repeat =
 * runs), so none needs a hook or traffic:
 *   emit_events       cfg_per_run records per run into `events`: a known sequence checked field by field
 *   emit_wide         the same into `wide_events`, whose 48-byte slots do not divide the ring size,
 *                     so records straddle the ring's end and are read through its second mapping
 *   emit_short        one 8-byte record into `events` with bpf_ringbuf_output: a record of another size
 *   hold_reservation  keeps a reserved record uncommitted (busy) for cfg_spin_loops while a later
 *                     record is already committed */
#include "bpfscope.bpf.h"

#define TEST_MAGIC 0xB0F5C0DE

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

const volatile __u32 cfg_per_run = 1;
const volatile __u32 cfg_discard_every = 0;   /* discard every Nth reserved record (0: never) */
const volatile __u32 cfg_spin_loops = 1 << 23;
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

static __always_inline void fill_test_event(struct test_event *event, __u64 seq)
{
	event->seq = seq;
	event->cpu = bpf_get_smp_processor_id();
	event->magic = TEST_MAGIC;
	__builtin_memcpy(event->tag, "bpfscop", 8);
}

/* Loops through bpf_loop so the verifier checks one iteration whatever cfg_per_run is. */
static long emit_event(__u32 index, void *ctx)
{
	__u64 *seq = seq_counter();
	struct test_event *event;
	__u64 n;

	if (!seq)
		return 1;
	n = __sync_fetch_and_add(seq, 1);
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
	bpf_loop(cfg_per_run, emit_event, NULL, 0);
	return XDP_PASS;
}

static long emit_wide_event(__u32 index, void *ctx)
{
	__u64 *seq = seq_counter();
	struct wide_event *event;
	__u64 n;

	if (!seq)
		return 1;
	n = __sync_fetch_and_add(seq, 1);
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
	bpf_loop(cfg_per_run, emit_wide_event, NULL, 0);
	return XDP_PASS;
}

SEC("xdp")
int emit_short(struct xdp_md *ctx)
{
	__u64 *seq = seq_counter();
	__u64 n;

	if (!seq)
		return XDP_PASS;
	n = __sync_fetch_and_add(seq, 1);
	bpf_ringbuf_output(&events, &n, sizeof(n), 0);
	return XDP_PASS;
}

static long spin(__u32 index, void *ctx)
{
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
	bpf_loop(cfg_spin_loops, spin, NULL, 0);
	set_hold_state(2);
	bpf_ringbuf_submit(held, 0);
	return XDP_PASS;
}
