/* One event per getppid() call of cfg_tgid, sent two ways as libbpf programs send them: into a BPF ring
 * buffer (Linux 5.8+) and into a perf event array (every kernel). */
#include "bpfscope.bpf.h"

struct event {
	__u32 tid;
	__u32 seq;
	char comm[16];
};
const struct event *unused_event __attribute__((unused));   /* puts struct event in the object's BTF */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 16);                            /* bytes, shared by all CPUs */
} ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);             /* one ring per CPU, made by the reader */
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} perf SEC(".maps");

const volatile __u32 cfg_tgid = 0;
__u32 seq = 0;

static __always_inline void fill(struct event *event)
{
	event->tid = (__u32)bpf_get_current_pid_tgid();
	event->seq = seq++;                     /* one thread calls: no atomics needed here */
	bpf_get_current_comm(event->comm, sizeof(event->comm));
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int to_ring(void *ctx)
{
	struct event *event;

	if (bpf_get_current_pid_tgid() >> 32 != cfg_tgid)
		return 0;
	event = bpf_ringbuf_reserve(&ring, sizeof(*event), 0);
	if (!event)
		return 0;                       /* the ring is full: the event is lost */
	fill(event);
	bpf_ringbuf_submit(event, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int to_perf(void *ctx)
{
	struct event event = {};

	if (bpf_get_current_pid_tgid() >> 32 != cfg_tgid)
		return 0;
	fill(&event);
	bpf_perf_event_output(ctx, &perf, BPF_F_CURRENT_CPU, &event, sizeof(event));
	return 0;
}
