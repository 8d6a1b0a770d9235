/* The same event, a child of cfg_tgid starting a program, at three kinds of tracepoint; each section
 * names its hook, so Object.attach_all() attaches all three. */
#include "bpfscope.bpf.h"

const volatile __u32 cfg_tgid = 0;
__u64 tracepoint_execs, raw_tp_execs, tp_btf_execs;

static __always_inline bool child_of_ours(void)
{
	struct task_struct *task = (void *)bpf_get_current_task();

	return BPF_CORE_READ(task, real_parent, tgid) == cfg_tgid;
}

SEC("tracepoint/sched/sched_process_exec")      /* stable format, fields read from the ctx struct */
int exec_tracepoint(void *ctx)
{
	if (child_of_ours())
		__sync_fetch_and_add(&tracepoint_execs, 1);
	return 0;
}

SEC("raw_tp/sched_process_exec")                /* the tracepoint's raw arguments */
int exec_raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
	if (child_of_ours())
		__sync_fetch_and_add(&raw_tp_execs, 1);
	return 0;
}

SEC("tp_btf/sched_process_exec")                /* typed arguments, read directly (BTF) */
int BPF_PROG(exec_tp_btf, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	if (task->real_parent->tgid == cfg_tgid)
		__sync_fetch_and_add(&tp_btf_execs, 1);
	return 0;
}
