/* Kernel tracing hooks, each counting the test's own getppid() calls or execs (cfg_tgid): raw_tp and
 * tp_btf, kprobes (one function, a syscall by name, many by pattern). */
#include "bpfscope.bpf.h"

#if defined(__TARGET_ARCH_x86)
#define NR_GETPPID 110
#elif defined(__TARGET_ARCH_arm64)
#define NR_GETPPID 173
#endif

enum hit {
	HIT_RAW_TP = 0,
	HIT_TP_BTF = 1,
	HIT_KPROBE = 2,
	HIT_KRETPROBE = 3,
	HIT_KSYSCALL = 4,
	HIT_KPROBE_MULTI = 5,
	HIT_COUNT,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HIT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

BTF_EXPORT(enum hit, hits_key);

const volatile __u32 cfg_tgid = 0;

static __always_inline void count(__u32 key)
{
	__u64 *slot = bpf_map_lookup_elem(&hits, &key);

	if (slot)
		*slot += 1;
}

static __always_inline bool ours(void)
{
	return (bpf_get_current_pid_tgid() >> 32) == cfg_tgid;
}

SEC("raw_tp/sys_enter")
int count_raw_getppid(struct bpf_raw_tracepoint_args *ctx)
{
	if (ours() && ctx->args[1] == NR_GETPPID)
		count(HIT_RAW_TP);
	return 0;
}

/* Execs of the test's children: the new image's parent is the test. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(count_child_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	if (BPF_CORE_READ(task, real_parent, tgid) == cfg_tgid)
		count(HIT_TP_BTF);
	return 0;
}

SEC("kprobe")
int BPF_KPROBE(count_kprobe)
{
	if (ours())
		count(HIT_KPROBE);
	return 0;
}

SEC("kretprobe")
int BPF_KRETPROBE(count_kretprobe)
{
	if (ours())
		count(HIT_KRETPROBE);
	return 0;
}

SEC("ksyscall/getppid")
int BPF_KPROBE(count_ksyscall)
{
	if (ours())
		count(HIT_KSYSCALL);
	return 0;
}

SEC("kprobe.multi")
int BPF_KPROBE(count_kprobe_multi)
{
	if (ours())
		count(HIT_KPROBE_MULTI);
	return 0;
}
