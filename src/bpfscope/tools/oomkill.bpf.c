/* bpfscope oomkill: every OOM kill, from the oom:mark_victim tracepoint, which the kernel hits once per
 * victim right after it sent the SIGKILL (mm/oom_kill.c, __oom_kill_process). It runs in the task whose
 * allocation could not be met: the trigger. The record holds the victim's pid, comm, uid, oom_score_adj
 * and memory (kB, as the kernel's "Killed process" line has them); the victim's task adds its process
 * and cgroups.
 *
 * Which cgroup hit its limit is in the kernel's struct oom_control, which no tracepoint passes on. It is
 * found as the kernel found it: the charge that failed walked the charged memory cgroup and its
 * ancestors to the first whose counter had no room (page_counter_try_charge), and reclaim could not
 * make room since, so that one is still within a charge batch of its limit when the victim is marked.
 * The walk starts at the trigger's memory cgroup (the one charged, unless it charged another's
 * memory), then at the victim's. None full: the system ran out (or a cpuset or mempolicy did). */
#include "bpfscope.bpf.h"

#define COMM_BYTES 16           /* TASK_COMM_LEN */
#define NAME_BYTES 64           /* a cgroup's directory name, cut; Python finds the whole path by id */
#define MAX_DEPTH 16            /* memory cgroups walked up from one task */
#define CHARGE_BATCH 64         /* MEMCG_CHARGE_BATCH: pages a charge may ask for beyond its own */

/* Linux 6.2: the victim's task by its pid, counted so that it stays while it is read. */
extern struct task_struct *bpf_task_from_pid(s32 pid) __ksym;
extern void bpf_task_release(struct task_struct *p) __ksym;

/* Which counter of the cgroup that hit its limit had no room. */
enum oom_counter {
	COUNTER_NONE = 0,       /* no memory cgroup was full: the system's memory */
	COUNTER_MEMORY = 1,
	COUNTER_MEMSW = 2,      /* cgroup v1: memory + swap */
};

struct oom_kill {
	__u64 time_ns;                  /* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
	__u64 total_vm_kb;              /* the victim's memory, as the record has it */
	__u64 anon_rss_kb;
	__u64 file_rss_kb;
	__u64 shmem_rss_kb;
	__u64 pgtables_kb;
	__u64 cgroup_id;                /* the victim's cgroup v2 (0: its task was gone) */
	__u64 memcg_id;                 /* the victim's memory cgroup (v1 or v2) */
	__u64 oom_memcg_id;             /* the memory cgroup that hit its limit; 0: none */
	__u64 oom_usage_pages;          /* that counter's usage and limit */
	__u64 oom_limit_pages;
	__u32 pid;                      /* the victim's process (tgid) */
	__u32 tid;                      /* the task the kernel marked */
	__u32 uid;
	__u32 trigger_pid;
	__u32 trigger_tid;
	__s16 oom_score_adj;
	__u8 counter;                   /* enum oom_counter */
	__u8 pad;
	char comm[COMM_BYTES];
	char trigger_comm[COMM_BYTES];
	char memcg_name[NAME_BYTES];    /* the leaf directories, for cgroups removed before Python reads */
	char oom_memcg_name[NAME_BYTES];
};

const volatile __u32 cfg_tgid = 0;              /* 0: every victim */
const volatile __u64 cfg_cgroup_id = 0;         /* the victim's cgroup v2; 0: any */
const volatile __u64 cfg_comm[2] = {};          /* the victim's comm, NUL-padded */
const volatile bool cfg_filter_comm = false;
const volatile bool cfg_memsw = false;          /* cgroup v1's memory controller: memory + swap is counted too */

DEFINE_RINGBUF(events, struct oom_kill, 1 << 16);
BTF_EXPORT(enum oom_counter, counter);

static __always_inline struct mem_cgroup *memcg_of(struct task_struct *task)
{
	int id = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);

	/* css is the first member of struct mem_cgroup */
	return (struct mem_cgroup *)BPF_CORE_READ(task, cgroups, subsys[id]);
}

static __always_inline __u64 memcg_id(struct mem_cgroup *memcg, char *name)
{
	struct kernfs_node *kn = BPF_CORE_READ(memcg, css.cgroup, kn);

	bpf_probe_read_kernel_str(name, NAME_BYTES, BPF_CORE_READ(kn, name));
	return BPF_CORE_READ(kn, id);
}

/* True when `counter` has less room than a charge batch (an unlimited one has room). */
static __always_inline bool full(struct page_counter *counter, __u64 *usage, __u64 *limit)
{
	*usage = BPF_CORE_READ(counter, usage.counter);
	*limit = BPF_CORE_READ(counter, max);
	return *usage + CHARGE_BATCH > *limit;
}

/* The first memory cgroup from `memcg` up whose counter is full, written into `e`. */
static __always_inline bool find_full(struct mem_cgroup *memcg, struct oom_kill *e)
{
	for (int i = 0; i < MAX_DEPTH && memcg; i++) {
		__u64 usage, limit;

		if (full(&memcg->memory, &usage, &limit))
			e->counter = COUNTER_MEMORY;
		else if (cfg_memsw && full(&memcg->memsw, &usage, &limit))
			e->counter = COUNTER_MEMSW;
		if (e->counter != COUNTER_NONE) {
			e->oom_usage_pages = usage;
			e->oom_limit_pages = limit;
			e->oom_memcg_id = memcg_id(memcg, e->oom_memcg_name);
			return true;
		}
		memcg = (struct mem_cgroup *)BPF_CORE_READ(memcg, css.parent);
	}
	return false;
}

static __always_inline bool wanted(struct task_struct *victim, const char *comm)
{
	if (cfg_tgid && (!victim || BPF_CORE_READ(victim, tgid) != cfg_tgid))
		return false;
	if (cfg_cgroup_id && (!victim || BPF_CORE_READ(victim, cgroups, dfl_cgrp, kn, id) != cfg_cgroup_id))
		return false;
	if (cfg_filter_comm) {
		__u64 name[2] = {};

		bpf_probe_read_kernel_str(name, sizeof(name), comm);
		if (name[0] != cfg_comm[0] || name[1] != cfg_comm[1])
			return false;
	}
	return true;
}

static __always_inline void report(struct trace_event_raw_mark_victim *ctx, struct task_struct *victim)
{
	struct task_struct *trigger = bpf_get_current_task_btf();
	__u64 id = bpf_get_current_pid_tgid();
	char comm[COMM_BYTES] = {};
	struct oom_kill *e;

	/* The comm is in the record since Linux 6.8; before, only in the task. */
	if (bpf_core_field_exists(ctx->__data_loc_comm))
		bpf_probe_read_kernel_str(comm, sizeof(comm), (void *)ctx + (BPF_CORE_READ(ctx, __data_loc_comm) & 0xffff));
	else if (victim)
		BPF_CORE_READ_STR_INTO(&comm, victim, comm);
	if (!wanted(victim, comm))
		return;
	e = RINGBUF_RESERVE(events);
	if (!e)
		return;
	__builtin_memset(e, 0, sizeof(*e));
	e->time_ns = bpf_ktime_get_ns();
	e->tid = BPF_CORE_READ(ctx, pid);
	e->pid = victim ? BPF_CORE_READ(victim, tgid) : e->tid;
	__builtin_memcpy(e->comm, comm, sizeof(comm));
	if (bpf_core_field_exists(ctx->total_vm)) {     /* Linux 6.8 */
		e->total_vm_kb = BPF_CORE_READ(ctx, total_vm);
		e->anon_rss_kb = BPF_CORE_READ(ctx, anon_rss);
		e->file_rss_kb = BPF_CORE_READ(ctx, file_rss);
		e->shmem_rss_kb = BPF_CORE_READ(ctx, shmem_rss);
		e->pgtables_kb = BPF_CORE_READ(ctx, pgtables);
		e->uid = BPF_CORE_READ(ctx, uid);
		e->oom_score_adj = BPF_CORE_READ(ctx, oom_score_adj);
	}
	e->trigger_pid = id >> 32;
	e->trigger_tid = (__u32)id;
	bpf_get_current_comm(e->trigger_comm, sizeof(e->trigger_comm));
	if (victim) {
		e->cgroup_id = BPF_CORE_READ(victim, cgroups, dfl_cgrp, kn, id);
		e->memcg_id = memcg_id(memcg_of(victim), e->memcg_name);
	}
	if (!find_full(memcg_of(trigger), e) && victim)
		find_full(memcg_of(victim), e);
	bpf_ringbuf_submit(e, 0);       /* rare: wake the reader at once */
}

SEC("tracepoint/oom/mark_victim")
int record_kill(struct trace_event_raw_mark_victim *ctx)
{
	/* The victim's task, for its process and cgroups: NULL if it is gone already. */
	struct task_struct *victim = bpf_task_from_pid(BPF_CORE_READ(ctx, pid));

	report(ctx, victim);
	if (victim)
		bpf_task_release(victim);
	return 0;
}
