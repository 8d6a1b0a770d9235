/* One event per program executed, streamed through a ring buffer: pid, parent, and the new comm. */
#include "bpfscope.bpf.h"

struct exec_event {
	__u64 time_ns;          /* bpf_ktime_get_ns: CLOCK_MONOTONIC */
	__u32 pid;
	__u32 ppid;
	char comm[16];
};

DEFINE_RINGBUF(events, struct exec_event, 1 << 18);

SEC("tracepoint/sched/sched_process_exec")
int report_exec(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct exec_event *e = RINGBUF_RESERVE(events);

	if (!e)
		return 0;       /* counted in events_lost */
	e->time_ns = bpf_ktime_get_ns();
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
	return 0;
}
