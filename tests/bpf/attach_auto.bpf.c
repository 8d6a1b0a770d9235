/* Auto-attach: sections that name their target (libbpf attaches them from the name alone), each counting
 * the test's own getppid() calls or children's execs (cfg_tgid); sections that name none; and sections
 * whose target does not exist. */
#include "bpfscope.bpf.h"

#if defined(__TARGET_ARCH_x86)
#define NR_GETPPID 110
#elif defined(__TARGET_ARCH_arm64)
#define NR_GETPPID 173
#endif

enum hit {
	HIT_TRACEPOINT = 0,
	HIT_RAW_TP,
	HIT_UPROBE,
	HIT_URETPROBE,
	HIT_TP_BTF,
	HIT_UPROBE_MULTI,
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

static __always_inline int count(__u32 key)
{
	__u64 *slot;

	if ((bpf_get_current_pid_tgid() >> 32) != cfg_tgid)
		return 0;
	slot = bpf_map_lookup_elem(&hits, &key);
	if (slot)
		*slot += 1;
	return 0;
}

/* --- sections that name their target --- */

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_tracepoint(void *ctx) { return count(HIT_TRACEPOINT); }

SEC("raw_tp/sys_enter")
int on_raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
	return ctx->args[1] == NR_GETPPID ? count(HIT_RAW_TP) : 0;
}

SEC("uprobe/libc.so.6:getppid")
int BPF_KPROBE(on_uprobe) { return count(HIT_UPROBE); }

SEC("uretprobe/libc.so.6:getppid")
int BPF_KRETPROBE(on_uretprobe) { return count(HIT_URETPROBE); }

SEC("uprobe.multi/libc.so.6:getpp*")
int BPF_KPROBE(on_uprobe_multi) { return count(HIT_UPROBE_MULTI); }

/* Execs of the test's children. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *task)
{
	if (BPF_CORE_READ(task, real_parent, tgid) == cfg_tgid) {
		__u32 key = HIT_TP_BTF;
		__u64 *slot = bpf_map_lookup_elem(&hits, &key);

		if (slot)
			*slot += 1;
	}
	return 0;
}

SEC("iter/task")
int list_tgids(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;

	if (task)
		BPF_SEQ_PRINTF(ctx->meta->seq, "%d\n", task->tgid);
	return 0;
}

/* --- sections that name no target --- */

SEC("xdp")
int pass_frames(struct xdp_md *ctx) { return XDP_PASS; }

SEC("tc")
int pass_packets(struct __sk_buff *skb) { return 0; }

SEC("uprobe")
int BPF_KPROBE(on_any_uprobe) { return 0; }

SEC("tracepoint")
int on_any_tracepoint(void *ctx) { return 0; }

SEC("cgroup/connect4")
int allow_connect(struct bpf_sock_addr *ctx) { return 1; }

SEC("socket")
int keep_datagrams(struct __sk_buff *skb) { return skb->len; }

SEC("perf_event")
int on_sample(void *ctx) { return 0; }

/* --- sections whose target does not exist --- */

SEC("tracepoint/syscalls/sys_enter_bpfscope_none")
int on_missing_tracepoint(void *ctx) { return 0; }

SEC("uprobe/libc.so.6:bpfscope_no_such_function")
int BPF_KPROBE(on_missing_function) { return 0; }
