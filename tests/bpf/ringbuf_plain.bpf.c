/* Ring buffers declared the plain libbpf way, for tests/kernel/test_ringbuf.py: BPF_MAP_TYPE_RINGBUF
 * maps without DEFINE_RINGBUF, so no exported record type and no lost counter; the reader names the
 * record type. Each program is driven by BPF_PROG_TEST_RUN.
 *   emit_event    one struct event into `events`, built in a per-CPU scratch map as libbpf-tools build
 *                 large events: that map is what puts struct event into the object's BTF
 *   emit_pair     one struct pair into `pairs`: only a local variable has that type, and clang writes
 *                 BTF for maps, globals and functions only, so the reader takes a numpy dtype
 *   emit_samples  records of 1, 5, 8, 13 and 32 bytes into `samples` (bpf_ringbuf_output): any size */
#include "bpfscope.bpf.h"

#define EVENT_PID 4242

struct event {
	__u32 pid;
	__u32 seq;
	char comm[16];
};

struct pair {
	__u64 left;
	__u64 right;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 12);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 12);
} pairs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 12);
} samples SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct event);
} heap SEC(".maps");

SEC("xdp")
int emit_event(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct event *event = bpf_map_lookup_elem(&heap, &zero);

	if (!event)
		return XDP_PASS;
	event->pid = EVENT_PID;
	event->seq++;
	__builtin_memcpy(event->comm, "plain", 6);
	bpf_ringbuf_output(&events, event, sizeof(*event), 0);
	return XDP_PASS;
}

SEC("xdp")
int emit_pair(struct xdp_md *ctx)
{
	struct pair *pair = bpf_ringbuf_reserve(&pairs, sizeof(*pair), 0);

	if (!pair)
		return XDP_PASS;
	pair->left = 1;
	pair->right = ~1ULL;
	bpf_ringbuf_submit(pair, 0);
	return XDP_PASS;
}

SEC("xdp")
int emit_samples(struct xdp_md *ctx)
{
	char text[32] = "0123456789abcdefghijklmnopqrstu";

	bpf_ringbuf_output(&samples, text, 1, 0);
	bpf_ringbuf_output(&samples, text, 5, 0);
	bpf_ringbuf_output(&samples, text, 8, 0);
	bpf_ringbuf_output(&samples, text, 13, 0);
	bpf_ringbuf_output(&samples, text, 32, 0);
	return XDP_PASS;
}
