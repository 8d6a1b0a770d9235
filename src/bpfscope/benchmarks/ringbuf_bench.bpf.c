/* Fills `events` as fast as the kernel can: cfg_per_run 16-byte records per BPF_PROG_TEST_RUN run.
 * benchmarks/ringbuf.py times the readers on what it leaves. cfg_submit_flags is BPF_RB_NO_WAKEUP
 * for the drain figures, so the producer's cost is reserve + submit and not one wakeup per record. */
#include "bpfscope.bpf.h"

/* fill_ring_noloop's verifier walks its loop once per record (14 instructions a record on 6.18): 1 << 15
 * records keep it inside the verifier's million. */
#define NOLOOP_MAX_PER_RUN (1 << 15)

struct bench_event {
	__u64 seq;
	__u32 cpu;
	__u32 run;
};

DEFINE_RINGBUF(events, struct bench_event, 1 << 20);

/* bpf_loop takes up to 1 << 23; fill_ring_noloop up to NOLOOP_MAX_PER_RUN */
const volatile __u32 cfg_per_run = 10000;
const volatile __u64 cfg_submit_flags = BPF_RB_NO_WAKEUP;

__u32 runs;   /* .bss: counts runs, so each record says which run made it */

struct fill_ctx {
	__u32 cpu;
	__u32 run;
};

static long emit_event(__u32 index, struct fill_ctx *fill)
{
	struct bench_event *event = RINGBUF_RESERVE(events);

	if (!event)
		return 0;   /* full: counted in events_lost */
	event->seq = index;
	event->cpu = fill->cpu;
	event->run = fill->run;
	bpf_ringbuf_submit(event, cfg_submit_flags);
	return 0;
}

/* bpf_loop: the verifier checks one iteration whatever cfg_per_run is. */
SEC("xdp")
int fill_ring(struct xdp_md *ctx)
{
	struct fill_ctx fill = { .cpu = bpf_get_smp_processor_id(), .run = runs++ };

	bpf_loop(cfg_per_run, emit_event, &fill, 0);
	return XDP_PASS;
}

/* For kernels without bpf_loop (before 5.17), which refuse an object's program that refers to a
 * callback; benchmarks/ringbuf.py loads one of the two (ObjectSpec.pick_loop_variants). A global
 * function: the verifier checks it once, on its own, and each call in the open-coded loop below
 * costs it a few instructions. It takes scalars only, all that global functions take before 5.12. */
__noinline int emit_one(__u32 index, __u32 cpu, __u32 run)
{
	struct bench_event *event = RINGBUF_RESERVE(events);

	if (!event)
		return 0;
	event->seq = index;
	event->cpu = cpu;
	event->run = run;
	bpf_ringbuf_submit(event, cfg_submit_flags);
	return 0;
}

SEC("xdp")
int fill_ring_noloop(struct xdp_md *ctx)
{
	__u32 cpu = bpf_get_smp_processor_id(), run = runs++;

	for (__u32 i = 0; i < cfg_per_run && i < NOLOOP_MAX_PER_RUN; i++)
		emit_one(i, cpu, run);
	return XDP_PASS;
}
