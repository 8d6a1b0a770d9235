/* Perf events and iterators: CPU clock samples of one process, and the threads of that process listed
 * from the kernel's task list. */
#include "bpfscope.bpf.h"

const volatile __u32 cfg_tgid = 0;
__u64 samples;

SEC("perf_event")
int count_samples(struct bpf_perf_event_data *ctx)
{
	if (bpf_get_current_pid_tgid() >> 32 == cfg_tgid)
		__sync_fetch_and_add(&samples, 1);
	return 0;
}

SEC("iter/task")
int list_threads(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;

	if (task && task->tgid == cfg_tgid)    /* NULL once, at the end of the walk */
		BPF_SEQ_PRINTF(ctx->meta->seq, "%d %s\n", task->pid, task->comm);
	return 0;
}
