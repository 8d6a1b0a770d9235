/* bpfscope funclatency: how long one user-space function takes, as a log2 histogram. A uprobe on
 * entry pushes the time on a per-thread stack, a uretprobe on return pops it; recursion nests on
 * that stack. The histogram, the call count and the summed time are one per-CPU slot: one map
 * lookup per return, no atomics. */
#include "bpfscope.bpf.h"

#define MAX_DEPTH 32          /* nested calls timed per thread; deeper ones are counted, not timed */
#define HIST_SLOTS 64         /* log2 buckets of a u64 */
#define MAX_THREADS 10240     /* threads inside the function at once */

_Static_assert((MAX_DEPTH & (MAX_DEPTH - 1)) == 0, "stack index is masked with MAX_DEPTH - 1");

struct call_stack {
	__u64 entered[MAX_DEPTH];    /* bpf_ktime_get_ns() at each open call, outermost first */
	__u32 depth;                 /* open calls, including those deeper than MAX_DEPTH */
	__u32 pad;
};

struct latency_hist {
	__u64 slots[HIST_SLOTS];     /* slot i: durations in [2^i, 2^(i+1)) units; slot 0 also holds 0 */
	__u64 count;                 /* calls timed */
	__u64 sum_ns;                /* their total, in ns whatever the unit */
	__u64 too_deep;              /* calls nested deeper than MAX_DEPTH: counted here, not timed */
	__u64 unmatched;             /* returns without a recorded entry (calls already open at attach) */
	__u64 untracked;             /* entries lost because `stacks` was full */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_THREADS);
	__type(key, __u32);                  /* thread id */
	__type(value, struct call_stack);
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct latency_hist);
} latencies SEC(".maps");

const volatile __u32 cfg_tgid = 0;        /* only this process; 0: every process */
const volatile __u64 cfg_unit_ns = 1000;  /* histogram unit: 1 ns, 1000 us, 1000000 ms */

static __always_inline struct latency_hist *hist(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&latencies, &zero);
}

/* The thread id when this process is traced, else 0 (thread 0 never runs user code). */
static __always_inline __u32 traced_thread(void)
{
	__u64 id = bpf_get_current_pid_tgid();

	if (cfg_tgid && (id >> 32) != cfg_tgid)
		return 0;
	return (__u32)id;
}

SEC("uprobe")
int BPF_KPROBE(time_entry)
{
	__u64 now = bpf_ktime_get_ns();
	__u32 tid = traced_thread();
	struct call_stack *stack;
	struct latency_hist *h;

	if (!tid)
		return 0;
	stack = bpf_map_lookup_elem(&stacks, &tid);
	if (!stack) {
		struct call_stack empty = {};

		bpf_map_update_elem(&stacks, &tid, &empty, BPF_NOEXIST);
		stack = bpf_map_lookup_elem(&stacks, &tid);
		if (!stack) {
			h = hist();
			if (h)
				h->untracked += 1;
			return 0;
		}
	}
	if (stack->depth < MAX_DEPTH) {
		stack->entered[stack->depth & (MAX_DEPTH - 1)] = now;
	} else {
		h = hist();
		if (h)
			h->too_deep += 1;
	}
	stack->depth += 1;
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(time_return)
{
	__u64 now = bpf_ktime_get_ns();
	__u32 tid = traced_thread();
	struct call_stack *stack;
	struct latency_hist *h;
	__u64 delta;
	__u32 depth;

	if (!tid)
		return 0;
	h = hist();
	if (!h)
		return 0;
	stack = bpf_map_lookup_elem(&stacks, &tid);
	if (!stack || !stack->depth) {
		h->unmatched += 1;
		return 0;
	}
	depth = --stack->depth;
	if (depth < MAX_DEPTH) {
		delta = now - stack->entered[depth & (MAX_DEPTH - 1)];
		h->slots[log2_u64(delta / cfg_unit_ns) & (HIST_SLOTS - 1)] += 1;
		h->count += 1;
		h->sum_ns += delta;
	}
	if (!depth)
		bpf_map_delete_elem(&stacks, &tid);  /* threads come and go; keep only those inside */
	return 0;
}
