/* bpfscope syscount: every system call counted in the kernel, by who made it (a process, or a cgroup),
 * its number and the errno it returned, with the time it took; from the two raw_syscalls tracepoints,
 * which every syscall of every architecture passes through. Nothing goes to user space per call:
 * Python reads the per-CPU counters in batches and names the numbers.
 *
 * Every filter runs first, on both tracepoints: pid, cgroup, comm. The knobs are .rodata, so the
 * verifier prunes what is switched off. The entry time is kept in task-local storage, which the
 * kernel frees with the task: a thread that never returns (exit, exit_group, a kill) leaves nothing
 * behind, where a hash map by thread id would fill up. */
#include "bpfscope.bpf.h"

#define COMM_BYTES 16           /* TASK_COMM_LEN */
#define MAX_ERRNO 4095          /* the kernel's IS_ERR_VALUE range: -4095..-1 is an error */
#define MAX_SYSCALL 1024        /* above every number of every table; -1 is a call cancelled by ptrace or seccomp */

/* raw_syscalls:sys_enter and sys_exit (events/raw_syscalls/sys_{enter,exit}/format): the common
 * header, then the number and the arguments or the result. Stable since 2.6.32; declared here rather
 * than taken from vmlinux.h, whose types would be CO-RE relocations and make libbpf load the
 * kernel's whole BTF. */
struct raw_syscall_enter {
	__u64 common;
	long id;
	unsigned long args[6];
};

struct raw_syscall_exit {
	__u64 common;
	long id;
	long ret;
};

/* Whose calls a counter holds: a process (tgid) or, with cfg_per_cgroup, a cgroup v2 id. */
struct call_key {
	__u64 owner;
	__u32 nr;               /* the syscall's number in this architecture's table */
	__u32 err;              /* the errno it returned, 0 for success */
};

struct call_stats {
	__u64 calls;
	__u64 timed;            /* calls whose entry was seen: total_ns and max_ns are theirs */
	__u64 total_ns;
	__u64 max_ns;           /* per CPU: Python takes the largest */
};

const volatile __u32 cfg_tgid = 0;              /* 0: every process */
const volatile __u64 cfg_cgroup_id = 0;         /* 0: every cgroup */
const volatile __u64 cfg_comm[2] = {};          /* the comm, NUL-padded */
const volatile bool cfg_filter_comm = false;
const volatile bool cfg_latency = true;         /* false: no entry program, counts only */
const volatile bool cfg_per_cgroup = false;     /* count by cgroup id instead of by process */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 10240);     /* Python sets it */
	__type(key, struct call_key);
	__type(value, struct call_stats);
} calls SEC(".maps");

/* The comm of each owner, as of its latest new kind of call (an exec renames a process). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);     /* Python sets it to calls' size */
	__type(key, __u64);
	__type(value, char[COMM_BYTES]);
} comms SEC(".maps");

/* Calls not counted because `calls` was full. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} calls_lost SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);   /* bpf_ktime_get_ns at entry; 0 once used */
} entered SEC(".maps");

static __always_inline bool wanted(__u64 id)
{
	if (cfg_tgid && (__u32)(id >> 32) != cfg_tgid)
		return false;
	if (cfg_cgroup_id && bpf_get_current_cgroup_id() != cfg_cgroup_id)
		return false;
	if (cfg_filter_comm) {
		__u64 comm[2] = {};

		bpf_get_current_comm(comm, sizeof(comm));
		if (comm[0] != cfg_comm[0] || comm[1] != cfg_comm[1])
			return false;
	}
	return true;
}

SEC("tracepoint/raw_syscalls/sys_enter")
int enter_syscall(struct raw_syscall_enter *ctx)
{
	__u64 *start;

	if (!wanted(bpf_get_current_pid_tgid()))
		return 0;
	start = bpf_task_storage_get(&entered, bpf_get_current_task_btf(), 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (start)
		*start = bpf_ktime_get_ns();
	return 0;
}

static __always_inline void count_lost(void)
{
	__u32 zero = 0;
	__u64 *lost = bpf_map_lookup_elem(&calls_lost, &zero);

	if (lost)
		*lost += 1;
}

/* The counters of `key`, made if new (and the owner's comm noted then); NULL when the map is full. */
static __always_inline struct call_stats *stats_of(struct call_key *key)
{
	struct call_stats zero = {};
	struct call_stats *stats = bpf_map_lookup_elem(&calls, key);
	char comm[COMM_BYTES] = {};

	if (stats)
		return stats;
	bpf_get_current_comm(comm, sizeof(comm));
	bpf_map_update_elem(&comms, &key->owner, comm, BPF_ANY);
	bpf_map_update_elem(&calls, key, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&calls, key);
}

SEC("tracepoint/raw_syscalls/sys_exit")
int exit_syscall(struct raw_syscall_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct call_key key = {};
	struct call_stats *stats;
	__u64 elapsed = 0;
	bool timed = false;

	if (!wanted(id) || ctx->id < 0 || ctx->id >= MAX_SYSCALL)
		return 0;
	if (cfg_latency) {
		__u64 *start = bpf_task_storage_get(&entered, bpf_get_current_task_btf(), 0, 0);

		/* No entry seen: the call began before the programs were attached. */
		if (start && *start) {
			elapsed = bpf_ktime_get_ns() - *start;
			*start = 0;
			timed = true;
		}
	}
	key.owner = cfg_per_cgroup ? bpf_get_current_cgroup_id() : id >> 32;
	key.nr = ctx->id;
	key.err = ctx->ret < 0 && ctx->ret >= -MAX_ERRNO ? -ctx->ret : 0;
	stats = stats_of(&key);
	if (!stats) {
		count_lost();
		return 0;
	}
	stats->calls += 1;      /* per-CPU value: no atomics */
	if (timed) {
		stats->timed += 1;
		stats->total_ns += elapsed;
		if (elapsed > stats->max_ns)
			stats->max_ns = elapsed;
	}
	return 0;
}
