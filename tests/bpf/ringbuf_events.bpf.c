/* Emits cfg_per_run records per run into `events`: a known sequence the tests check field by field.
 * Driven by BPF_PROG_TEST_RUN (repeat = runs), so it needs no hook and no traffic. */
#include "bpfscope.bpf.h"

struct test_event {
	__u64 seq;
	__u32 cpu;
	__u32 magic;
	char tag[8];
};

DEFINE_RINGBUF(events, struct test_event, 1 << 16);

const volatile __u32 cfg_per_run = 1;
const volatile __u32 cfg_discard_every = 0;   /* discard every Nth reserved record (0: never) */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} next_seq SEC(".maps");

SEC("xdp")
int emit_events(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *seq = bpf_map_lookup_elem(&next_seq, &zero);

	if (!seq)
		return XDP_PASS;
	for (__u32 i = 0; i < cfg_per_run && i < 1024; i++) {
		__u64 n = __sync_fetch_and_add(seq, 1);
		struct test_event *event = RINGBUF_RESERVE(events);

		if (!event)
			continue;
		event->seq = n;
		event->cpu = bpf_get_smp_processor_id();
		event->magic = 0xB0F5C0DE;
		__builtin_memcpy(event->tag, "bpfscop", 8);
		if (cfg_discard_every && n % cfg_discard_every == 0)
			bpf_ringbuf_discard(event, 0);
		else
			bpf_ringbuf_submit(event, 0);
	}
	return XDP_PASS;
}
