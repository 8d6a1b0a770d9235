/* Perf event buffers (BPF_MAP_TYPE_PERF_EVENT_ARRAY) for tests/kernel/test_perfbuf.py:
 *   trace_getpid  on syscalls/sys_enter_getpid: one struct getpid_sample per call made by process
 *                 cfg_tgid into `getpids`, numbered from 1. The plain libbpf way: the sample is a local
 *                 variable, and its type reaches the BTF only through fill_getpid_sample's signature.
 *   emit_samples  cfg_per_run struct test_sample per run into `samples` (BTF_EXPORT names the type),
 *                 numbered on from next_seq, for BPF_PROG_TEST_RUN
 *   emit_short    one 8-byte sample into `samples`: a sample of another size
 *   emit_sizes    samples of 1, 5, 8, 13 and 32 bytes into `sizes`
 * struct local_sample is in no signature, map or global: it is not in the BTF at all. */
#include "bpfscope.bpf.h"

#define TEST_MAGIC 0xB0F5C0DE
#define MAX_PER_RUN 64

struct getpid_sample {
	__u64 seq;
	__u32 pid;
	__u32 cpu;
};

struct test_sample {
	__u64 seq;
	__u64 check;       /* ~seq: a sample read half from the wrong place fails it */
	__u32 cpu;
	__u32 magic;
};

struct local_sample {
	__u64 left;
	__u64 right;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} getpids SEC(".maps"), samples SEC(".maps"), sizes SEC(".maps");

BTF_EXPORT(struct test_sample, samples);

const volatile __u32 cfg_tgid = 0;
const volatile __u32 cfg_per_run = 1;   /* at most MAX_PER_RUN */
__u64 getpid_seq;
__u64 next_seq;

static __noinline int fill_getpid_sample(struct getpid_sample *sample)
{
	sample->seq = __sync_add_and_fetch(&getpid_seq, 1);
	sample->pid = bpf_get_current_pid_tgid() >> 32;
	sample->cpu = bpf_get_smp_processor_id();
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getpid")
int trace_getpid(void *ctx)
{
	struct getpid_sample sample = {};

	if (bpf_get_current_pid_tgid() >> 32 != cfg_tgid)
		return 0;
	fill_getpid_sample(&sample);
	bpf_perf_event_output(ctx, &getpids, BPF_F_CURRENT_CPU, &sample, sizeof(sample));
	return 0;
}

SEC("xdp")
int emit_samples(struct xdp_md *ctx)
{
	struct test_sample sample = { .cpu = bpf_get_smp_processor_id(), .magic = TEST_MAGIC };

	for (__u32 i = 0; i < MAX_PER_RUN && i < cfg_per_run; i++) {
		sample.seq = __sync_fetch_and_add(&next_seq, 1);
		sample.check = ~sample.seq;
		bpf_perf_event_output(ctx, &samples, BPF_F_CURRENT_CPU, &sample, sizeof(sample));
	}
	return XDP_PASS;
}

SEC("xdp")
int emit_short(struct xdp_md *ctx)
{
	struct local_sample sample = { .left = 1, .right = 2 };

	bpf_perf_event_output(ctx, &samples, BPF_F_CURRENT_CPU, &sample, sizeof(sample.left));
	return XDP_PASS;
}

SEC("xdp")
int emit_sizes(struct xdp_md *ctx)
{
	char text[32] = "0123456789abcdefghijklmnopqrstu";

	bpf_perf_event_output(ctx, &sizes, BPF_F_CURRENT_CPU, text, 1);
	bpf_perf_event_output(ctx, &sizes, BPF_F_CURRENT_CPU, text, 5);
	bpf_perf_event_output(ctx, &sizes, BPF_F_CURRENT_CPU, text, 8);
	bpf_perf_event_output(ctx, &sizes, BPF_F_CURRENT_CPU, text, 13);
	bpf_perf_event_output(ctx, &sizes, BPF_F_CURRENT_CPU, text, 32);
	return XDP_PASS;
}
