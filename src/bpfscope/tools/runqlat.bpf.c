/* bpfscope runqlat: how long runnable tasks wait for a CPU, as log2 histograms kept in the kernel.
 *
 * A task starts waiting when it is woken (sched_wakeup, sched_wakeup_new) or switched out while still
 * runnable (preempted: sched_switch's prev in TASK_RUNNING, as the scheduler's own run_delay counts),
 * and stops when it is switched in (sched_switch's next). The start is kept by thread id in `queued`;
 * the wait goes into the histogram of the CPU it ended on (`by_cpu`, a per-CPU array: the CPU's own
 * slot is that CPU's histogram) and, with cfg_per_cgroup, into its cgroup's (`by_cgroup`). No atomics,
 * no ring: Python reads the histograms in one batch.
 *
 * Two forms of the same three programs; Python loads one (Feature.TP_BTF):
 * - tp_btf (Linux 5.5+): the tracepoints' own arguments, the task_structs, read directly; every filter
 *   is applied when the wait starts.
 * - tracepoint: the records carry pids and comms only. The task switched out is `current`, so its
 *   tgid, comm and cgroup are known; a woken or switched-in task's are not. Where a filter or key needs
 *   them (cfg_defer), a wait that ends at a switch-in is kept per CPU and counted, or not, at that CPU's
 *   next sched_switch, where the task that waited has become `current` (prev): nothing else runs on
 *   that CPU in between. */
#include "bpfscope.bpf.h"

#define HIST_SLOTS 64           /* log2 buckets of a u64 */
#define COMM_BYTES 16           /* TASK_COMM_LEN */
#define TASK_RUNNING 0
/* sched_switch's record reports a preempted task as TASK_REPORT_MAX (0x100) and a running one as 0;
 * the low byte holds the sleeping states. */
#define TASK_REPORT_STATES 0xff

struct wait_hist {
	__u64 slots[HIST_SLOTS];        /* slot i: waits in [2^i, 2^(i+1)) units; slot 0 also holds 0 */
	__u64 count;
	__u64 sum_ns;                   /* their total, in ns whatever the unit */
};

/* A wait that ended at a switch-in, counted at the CPU's next sched_switch (tracepoint form). */
struct pending_wait {
	__u64 wait_ns;
	__u64 set;
};

const volatile __u32 cfg_tgid = 0;              /* only this process; 0: every process */
const volatile __u64 cfg_comm[2] = {};          /* only tasks with this comm, NUL-padded */
const volatile bool cfg_filter_comm = false;
const volatile __u64 cfg_cgroup_id = 0;         /* only tasks in this cgroup v2; 0: any */
const volatile bool cfg_per_cgroup = false;     /* also a histogram per cgroup */
const volatile __u64 cfg_unit_ns = 1000;        /* histogram unit: 1 ns, 1000 us, 1000000 ms */
/* Tracepoint form: count a wait once its task is current (a filter, or per cgroup). */
const volatile bool cfg_defer = false;

/* LRU: a start that no switch-in ends (a wakeup that came while the task still ran, and the task then
 * exited) is pushed out by newer ones; any other start is ended, or replaced by the task's next one. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 10240);     /* tasks waiting at once */
	__type(key, __u32);             /* thread id */
	__type(value, __u64);           /* bpf_ktime_get_ns() when it started to wait */
} queued SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct wait_hist);
} by_cpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);      /* cgroups with a histogram at once; past that, their waits are lost */
	__uint(map_flags, BPF_F_NO_PREALLOC);   /* memory for the cgroups seen, not for all CPUs x 1024 */
	__type(key, __u64);             /* cgroup v2 id */
	__type(value, struct wait_hist);
} by_cgroup SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pending_wait);
} pending SEC(".maps");

/* Waits not measured: `queued` or `by_cgroup` was full. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

/* A new cgroup's histogram starts from this (too big for the stack). */
static const struct wait_hist empty_hist;

static __always_inline void count_lost(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&lost, &zero);

	if (n)
		*n += 1;        /* per-CPU slot: no atomic needed */
}

static __always_inline void add(struct wait_hist *h, __u64 wait_ns)
{
	h->slots[log2_u64(wait_ns / cfg_unit_ns) & (HIST_SLOTS - 1)] += 1;
	h->count += 1;
	h->sum_ns += wait_ns;
}

/* One wait of `wait_ns` ended on this CPU, by a task in cgroup `cgroup_id`. */
static __always_inline void record(__u64 wait_ns, __u64 cgroup_id)
{
	__u32 zero = 0;
	struct wait_hist *h = bpf_map_lookup_elem(&by_cpu, &zero);

	if (h)
		add(h, wait_ns);
	if (!cfg_per_cgroup)
		return;
	h = map_lookup_or_init(&by_cgroup, &cgroup_id, &empty_hist);
	if (h)
		add(h, wait_ns);
	else
		count_lost();
}

/* Whether a comm, given as its two 8-byte words, is cfg_comm: compared up to its NUL (older kernels
 * leave bytes after it as they were). */
static __always_inline bool comm_is_wanted(__u64 low, __u64 high)
{
	const volatile char *wanted = (const volatile char *)cfg_comm;  /* volatile: never folded to the default */

	for (int i = 0; i < COMM_BYTES; i++) {
		char c = (i < 8 ? low >> (8 * i) : high >> (8 * (i - 8))) & 0xff;

		if (c != wanted[i])
			return false;
		if (!c)
			break;
	}
	return true;
}

static __always_inline bool task_comm_wanted(struct task_struct *t)
{
	__u64 comm[2] = {};

	if (!cfg_filter_comm)
		return true;
	bpf_probe_read_kernel(comm, sizeof(comm), &t->comm);
	return comm_is_wanted(comm[0], comm[1]);
}

static __always_inline void start_wait(__u32 tid, __u64 now)
{
	if (bpf_map_update_elem(&queued, &tid, &now, BPF_ANY))
		count_lost();
}

/* The wait of thread `tid` that ends now, or 0 if it was not waiting (as far as we saw). */
static __always_inline __u64 end_wait(__u32 tid, __u64 now)
{
	__u64 *started = bpf_map_lookup_elem(&queued, &tid);
	__u64 wait_ns;

	if (!started)
		return 0;
	wait_ns = now - *started;
	bpf_map_delete_elem(&queued, &tid);
	return wait_ns ? wait_ns : 1;   /* 0 means "none": a wait shorter than a tick of the clock is 1 ns */
}

/* --- tp_btf: the task_structs themselves, read in place --- */

/* Before 5.14 the field was `state`. */
struct task_struct___pre514 {
	long state;
} __attribute__((preserve_access_index));

static __always_inline long task_state(struct task_struct *t)
{
	if (bpf_core_field_exists(t->__state))
		return t->__state;
	return ((struct task_struct___pre514 *)t)->state;
}

static __always_inline __u64 task_cgroup_id(struct task_struct *t)
{
	return BPF_CORE_READ(t, cgroups, dfl_cgrp, kn, id);
}

static __always_inline bool task_wanted(struct task_struct *t)
{
	if (cfg_tgid && t->tgid != cfg_tgid)
		return false;
	if (!task_comm_wanted(t))
		return false;
	return !cfg_cgroup_id || task_cgroup_id(t) == cfg_cgroup_id;
}

static __always_inline void woken(struct task_struct *t)
{
	if (task_wanted(t))
		start_wait(t->pid, bpf_ktime_get_ns());
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(wakeup_btf, struct task_struct *t)
{
	woken(t);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(wakeup_new_btf, struct task_struct *t)
{
	woken(t);
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(switch_btf, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	__u64 now = bpf_ktime_get_ns(), wait_ns;
	__u32 prev_tid = prev->pid, next_tid = next->pid;

	/* 0: this CPU's idle task. A task that goes to sleep keeps what start it had: its wakeup replaces it. */
	if (prev_tid && task_state(prev) == TASK_RUNNING && task_wanted(prev))
		start_wait(prev_tid, now);
	if (!next_tid)
		return 0;
	wait_ns = end_wait(next_tid, now);
	if (wait_ns)
		record(wait_ns, cfg_per_cgroup ? task_cgroup_id(next) : 0);
	return 0;
}

/* --- tracepoint: pids and comms in the record; tgid and cgroup of `current` only --- */

static __always_inline bool current_wanted(void)
{
	__u64 comm[2] = {};

	if (cfg_tgid && (bpf_get_current_pid_tgid() >> 32) != cfg_tgid)
		return false;
	if (cfg_filter_comm) {
		bpf_get_current_comm(comm, sizeof(comm));
		if (!comm_is_wanted(comm[0], comm[1]))
			return false;
	}
	return !cfg_cgroup_id || bpf_get_current_cgroup_id() == cfg_cgroup_id;
}

/* The woken task is not current: every wakeup starts a wait, and the filters decide when it is counted. */
static __always_inline void woken_tp(struct trace_event_raw_sched_wakeup_template *ctx)
{
	start_wait(ctx->pid, bpf_ktime_get_ns());
}

SEC("tracepoint/sched/sched_wakeup")
int wakeup_tp(struct trace_event_raw_sched_wakeup_template *ctx)
{
	woken_tp(ctx);
	return 0;
}

SEC("tracepoint/sched/sched_wakeup_new")
int wakeup_new_tp(struct trace_event_raw_sched_wakeup_template *ctx)
{
	woken_tp(ctx);
	return 0;
}

SEC("tracepoint/sched/sched_switch")
int switch_tp(struct trace_event_raw_sched_switch *ctx)
{
	__u64 now = bpf_ktime_get_ns(), wait_ns;
	__u32 prev_tid = ctx->prev_pid, next_tid = ctx->next_pid;
	struct pending_wait *waiting = NULL;
	__u32 zero = 0;

	if (cfg_defer) {
		/* The wait that ended at this CPU's last switch-in was prev's, which is current. */
		waiting = bpf_map_lookup_elem(&pending, &zero);
		if (!waiting)
			return 0;
		if (waiting->set && current_wanted())
			record(waiting->wait_ns, cfg_per_cgroup ? bpf_get_current_cgroup_id() : 0);
		waiting->set = 0;
	}
	if (prev_tid && !(ctx->prev_state & TASK_REPORT_STATES) && current_wanted())
		start_wait(prev_tid, now);
	if (!next_tid)
		return 0;
	wait_ns = end_wait(next_tid, now);
	if (!wait_ns)
		return 0;
	if (waiting) {
		waiting->wait_ns = wait_ns;
		waiting->set = 1;
	} else {
		record(wait_ns, 0);
	}
	return 0;
}
