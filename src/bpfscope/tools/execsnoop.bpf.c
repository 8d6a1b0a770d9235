/* bpfscope execsnoop: every execve and execveat, successful or failed, with the caller's pid,
 * parent, uid and cgroup, the path and argv it asked for, and the result.
 *
 * argv lives in the caller's memory, which a successful exec throws away: so the syscall's entry
 * reads path and argv into a stash keyed by thread id, and its exit, which runs in the new image
 * when the exec succeeded, adds the return value and the new comm and sends the event. Filters
 * that the entry can decide (uid, parent, cgroup, program name) stop there, before any copying.
 *
 * A non-leader thread that execs takes over its thread group's id during the exec, so the exit
 * runs under another tid than the entry did: sched_process_exec, which names both, moves the
 * stash. */
#include "bpfscope.bpf.h"

#define MAX_ARGS 20             /* ceiling of cfg_max_args */
#define ARG_BYTES 128           /* ceiling of cfg_arg_bytes, the NUL included */
#define PATH_BYTES 256          /* a power of 2: indexes are masked with PATH_BYTES - 1 */
#define COMM_BYTES 16           /* TASK_COMM_LEN */

enum exec_syscall {
	SYSCALL_EXECVE = 0,
	SYSCALL_EXECVEAT = 1,
};

enum exec_flags {
	EXEC_MORE_ARGS = 1,             /* argv has more entries than argc */
	EXEC_PATH_CUT = 2,              /* the path is longer than PATH_BYTES - 1 */
	EXEC_ARGS_UNREADABLE = 4,       /* argv or an argument was not readable: argc is what was */
};

struct exec_event {
	__u64 time_ns;                  /* bpf_ktime_get_ns (CLOCK_MONOTONIC) at the syscall's exit */
	__u64 cgroup_id;                /* cgroup v2 id (the cgroup directory's inode number) */
	__u32 pid;                      /* thread group id */
	__u32 ppid;                     /* the parent's thread group id */
	__u32 uid;
	__s32 ret;                      /* 0, or -errno */
	__u32 cut_args;                 /* bit i: args[i] was cut at cfg_arg_bytes - 1 bytes */
	__u8 syscall;                   /* enum exec_syscall */
	__u8 argc;                      /* arguments read */
	__u8 flags;                     /* enum exec_flags */
	__u8 pad;
	char comm[COMM_BYTES];          /* after a successful exec the new program's, else the caller's */
	char path[PATH_BYTES];          /* as given to the syscall */
	__u8 arg_len[MAX_ARGS];         /* bytes of each argument, without its NUL */
	char args[MAX_ARGS * ARG_BYTES];/* argument i at i * ARG_BYTES, NUL-terminated */
};

_Static_assert(sizeof(struct exec_event) <= 4096, "an exec event fits in a page");
_Static_assert(MAX_ARGS <= 32, "cut_args has a bit per argument");

const volatile __u32 cfg_uid = (__u32)-1;       /* -1: any (no uid is -1) */
const volatile __u32 cfg_ppid = 0;              /* 0: any */
const volatile __u64 cfg_cgroup_id = 0;         /* 0: any */
const volatile char cfg_name[COMM_BYTES] = {};  /* "": any; else the program's name, cut at 15 bytes */
const volatile bool cfg_failed_only = false;
const volatile __u32 cfg_max_args = MAX_ARGS;
const volatile __u32 cfg_arg_bytes = ARG_BYTES;
const volatile bool cfg_count = false;          /* count per comm and cgroup, emit nothing */

DEFINE_RINGBUF(events, struct exec_event, 1 << 20);
BTF_EXPORT(enum exec_syscall, syscall);
BTF_EXPORT(enum exec_flags, flags);

/* Execs between entry and exit. Entries are deleted at the exit, so only execs in flight at once
 * need a slot; not preallocated, since a slot is 3 KiB. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);             /* tid */
	__type(value, struct exec_event);
} execs SEC(".maps");

struct exec_count_key {
	char comm[COMM_BYTES];          /* the new program's after a successful exec, else the caller's */
	__u64 cgroup_id;
};

struct exec_counts {
	__u64 execs;                    /* every exec that passed the filters, failed ones included */
	__u64 failures;
};

/* Count mode (the agent): per CPU, so no atomics; entries are never deleted by the kernel. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 10240);
	__type(key, struct exec_count_key);
	__type(value, struct exec_counts);
} counts SEC(".maps");

/* Zeroes to start a stash entry from; in .bss, so .rodata holds only the knobs. */
static struct exec_event empty_event;

static __always_inline void count_lost(void)
{
	__u32 zero = 0;
	__u64 *count = bpf_map_lookup_elem(&events_lost, &zero);

	if (count)
		*count += 1;    /* per-CPU slot: no atomic needed */
}

/* Whether the string at user address `s` goes on past byte `n`, where a read stopped. */
static __always_inline bool goes_on(const char *s, __u32 n)
{
	char c = 0;

	return bpf_probe_read_user(&c, 1, s + n) == 0 && c != 0;
}

/* Whether the program the path names has cfg_name as its comm: the path's last component, cut at
 * 15 bytes, as the kernel names the process it starts. The scan for the last '/' has no branch: a
 * branch per byte would give the verifier another state to follow through the rest of the path at
 * each '/', and a bpf_loop callback (Linux 5.17+) would keep the object off older kernels. So the
 * loop reads all PATH_BYTES bytes, counting none after the NUL, and the verifier follows one path. */
static __always_inline bool name_matches(const char *path)
{
	__u32 base = 0, live = 1;

	for (__u32 i = 0; i < PATH_BYTES; i++) {
		__u32 c = (__u8)path[i];
		__u32 slash;

		live &= (c + 0xff) >> 8;                /* 0 from the NUL on */
		slash = (((c ^ '/') - 1) >> 31) & live; /* 1 at a '/' (c ^ '/' is 0, and below 256) */
		/* Hidden from clang, which would make the product a select, a branch; and a product,
		 * not a mask (base & -slash), which Linux 6.17+ verifiers split into two states. */
		asm volatile("" : "+r"(slash));
		base += slash * (i + 1 - base);
	}
	/* path[PATH_BYTES - 1] is always NUL, so the comparison ends before an index wraps. */
	for (__u32 j = 0; j < COMM_BYTES; j++) {
		char want = cfg_name[j];
		char got = j < COMM_BYTES - 1 ? path[(base + j) & (PATH_BYTES - 1)] : 0;

		if (want != got)
			return false;
		if (!want)
			return true;
	}
	return true;
}

static __always_inline __u32 arg_bytes_cap(void)
{
	return cfg_arg_bytes > ARG_BYTES || cfg_arg_bytes < 2 ? ARG_BYTES : cfg_arg_bytes;
}

/* Reads argument i from user address `arg`: its length with the NUL, or 0 when it was unreadable
 * (the event then says so) or past the argument cap (the event says there were more). */
static __always_inline long read_arg(struct exec_event *e, __u32 i, const char *arg)
{
	__u32 max_args = cfg_max_args < MAX_ARGS ? cfg_max_args : MAX_ARGS;
	__u32 arg_bytes = arg_bytes_cap();
	long n;

	if (i >= max_args || i >= MAX_ARGS) {
		e->flags |= EXEC_MORE_ARGS;
		return 0;
	}
	n = bpf_probe_read_user_str(&e->args[i * ARG_BYTES], arg_bytes, arg);
	if (n < 0) {
		e->flags |= EXEC_ARGS_UNREADABLE;
		return 0;
	}
	if (n == 0) {   /* an empty argument: kernels before 6.x count no NUL for it, later ones 1 */
		e->args[i * ARG_BYTES] = 0;
		n = 1;
	}
	e->arg_len[i] = n - 1;
	if (n == arg_bytes && goes_on(arg, arg_bytes - 1))
		e->cut_args |= 1U << i;
	e->argc = i + 1;
	return n;
}

/* At the syscall's entry: argv as the caller passed it, an array of pointers into its memory. */
static __always_inline void read_args(struct exec_event *e, const char *const *argv)
{
	if (!argv)
		return;         /* the kernel takes a NULL argv as an empty one */
	for (__u32 i = 0; i <= MAX_ARGS; i++) {
		const char *arg = NULL;

		if (bpf_probe_read_user(&arg, sizeof(arg), &argv[i])) {
			e->flags |= EXEC_ARGS_UNREADABLE;
			return;
		}
		if (!arg || !read_arg(e, i, arg))
			return;
	}
}

/* After a successful exec, where the entry could not read argv (a page of the caller's that was not
 * in memory: bpf cannot fault it in): the kernel has just copied the arguments, one NUL-terminated
 * string after another, to the new image's stack between mm->arg_start and arg_end. */
static __always_inline void reread_args(struct exec_event *e)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	unsigned long at = BPF_CORE_READ(task, mm, arg_start);
	unsigned long end = BPF_CORE_READ(task, mm, arg_end);

	e->flags &= ~(EXEC_ARGS_UNREADABLE | EXEC_MORE_ARGS);
	e->argc = 0;
	e->cut_args = 0;
	for (__u32 i = 0; i <= MAX_ARGS && at < end; i++) {
		long n = read_arg(e, i, (const char *)at);

		if (!n)
			return;
		if (e->cut_args & (1U << i)) {  /* where the next one starts is past what was read */
			e->flags |= EXEC_ARGS_UNREADABLE;
			return;
		}
		at += n;
	}
}

static __always_inline int stash(const char *path, const char *const *argv, enum exec_syscall syscall)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u32 uid = (__u32)bpf_get_current_uid_gid();
	__u64 cgroup_id = bpf_get_current_cgroup_id();
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u32 ppid = BPF_CORE_READ(task, real_parent, tgid);
	struct exec_event *e;
	long n;

	if ((cfg_uid != (__u32)-1 && uid != cfg_uid) || (cfg_ppid && ppid != cfg_ppid) ||
	    (cfg_cgroup_id && cgroup_id != cfg_cgroup_id))
		return 0;
	/* BPF_ANY: a stale entry of this tid (its exit never came) is overwritten. */
	if (bpf_map_update_elem(&execs, &tid, &empty_event, BPF_ANY)) {
		count_lost();
		return 0;
	}
	e = bpf_map_lookup_elem(&execs, &tid);
	if (!e)
		return 0;
	n = bpf_probe_read_user_str(e->path, PATH_BYTES, path);
	if (n == PATH_BYTES && goes_on(path, PATH_BYTES - 1))
		e->flags |= EXEC_PATH_CUT;
	if (cfg_name[0] && !name_matches(e->path)) {
		bpf_map_delete_elem(&execs, &tid);
		return 0;
	}
	e->cgroup_id = cgroup_id;
	e->ppid = ppid;
	e->uid = uid;
	e->syscall = syscall;
	if (!cfg_count)
		read_args(e, argv);
	return 0;
}

static __always_inline void count(const struct exec_event *stashed, long ret)
{
	struct exec_count_key key = {};
	struct exec_counts *c, zero = {};

	bpf_get_current_comm(key.comm, sizeof(key.comm));
	key.cgroup_id = stashed->cgroup_id;
	c = map_lookup_or_init(&counts, &key, &zero);
	if (!c) {
		count_lost();   /* the map is full */
		return;
	}
	c->execs += 1;
	if (ret < 0)
		c->failures += 1;
}

static __always_inline int report(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct exec_event *stashed = bpf_map_lookup_elem(&execs, &tid);
	struct exec_event *event;

	if (!stashed)
		return 0;
	if (cfg_count) {
		count(stashed, ret);
	} else if (!cfg_failed_only || ret < 0) {
		if (ret == 0 && (stashed->flags & EXEC_ARGS_UNREADABLE))
			reread_args(stashed);
		event = RINGBUF_RESERVE(events);
		if (event) {
			bpf_probe_read_kernel(event, sizeof(*event), stashed);
			event->time_ns = bpf_ktime_get_ns();
			event->pid = id >> 32;
			event->ret = ret;
			bpf_get_current_comm(event->comm, sizeof(event->comm));
			bpf_ringbuf_submit(event, 0);
		}
	}
	bpf_map_delete_elem(&execs, &tid);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_execve")
int stash_execve(struct trace_event_raw_sys_enter *ctx)
{
	return stash((const char *)ctx->args[0], (const char *const *)ctx->args[1], SYSCALL_EXECVE);
}

SEC("tracepoint/syscalls/sys_enter_execveat")
int stash_execveat(struct trace_event_raw_sys_enter *ctx)
{
	return stash((const char *)ctx->args[1], (const char *const *)ctx->args[2], SYSCALL_EXECVEAT);
}

SEC("tracepoint/syscalls/sys_exit_execve")
int report_execve(struct trace_event_raw_sys_exit *ctx)
{
	return report(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_execveat")
int report_execveat(struct trace_event_raw_sys_exit *ctx)
{
	return report(ctx->ret);
}

SEC("tracepoint/sched/sched_process_exec")
int rekey_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	__u32 old_tid = ctx->old_pid;
	__u32 tid = ctx->pid;
	struct exec_event *stashed;

	if (old_tid == tid)
		return 0;
	stashed = bpf_map_lookup_elem(&execs, &old_tid);
	if (!stashed)
		return 0;
	if (bpf_map_update_elem(&execs, &tid, stashed, BPF_ANY) == 0)
		bpf_map_delete_elem(&execs, &old_tid);
	return 0;
}
