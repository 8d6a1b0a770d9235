/* bpfscope opensnoop: every open(2), openat(2) and openat2(2), from the syscall exit tracepoints
 * alone. At exit the task's saved user registers still hold the call's arguments, so the path
 * pointer and flags are read there (the kernel has just read the path, so it is paged in) and one
 * event goes out with the result; in count mode the comm's per-CPU counter grows and nothing goes
 * out. No enter tracepoint means no per-thread stash and half the tracepoint cost per open.
 *
 * Every filter runs here, as early as it can: pid, comm and failed-only before anything is read,
 * the path prefix once the path is. The knobs are .rodata, so the verifier sees them as constants
 * and prunes what is switched off.
 *
 * Kernels without bpf_task_pt_regs (before 5.15; bpf_get_current_task_btf came in 5.11) take the
 * classic way, as libbpf-tools' opensnoop does: the stash_enter_* programs keep each call's
 * arguments in a per-thread hash map at syscall entry and the stash_exit_* programs take them from
 * there. Python loads one set or the other, chosen by probing (Feature.TASK_PT_REGS). */
#include "bpfscope.bpf.h"

#define PATH_BYTES 256          /* longer paths are cut; the last byte is always NUL */
#define COMM_BYTES 16           /* TASK_COMM_LEN */
/* A record's room in the ring: 8-byte header, the record, 8-byte aligned. */
#define RECORD_SLOT ((sizeof(struct open_event) + 8 + 7) & ~7UL)

/* Which syscall; the names Python shows come from this enum. */
enum open_call {
	CALL_OPEN = 0,
	CALL_OPENAT = 1,
	CALL_OPENAT2 = 2,
};

struct open_event {
	__u64 time_ns;          /* bpf_ktime_get_ns (CLOCK_MONOTONIC) at exit */
	__s64 ret;              /* the fd, or -errno */
	__u64 flags;            /* O_* flags (openat2: open_how.flags) */
	__u32 pid;              /* tgid */
	__u32 tid;
	__u8 call;              /* enum open_call */
	__u8 pad[7];
	char comm[COMM_BYTES];
	char path[PATH_BYTES];  /* NUL-padded: equal paths are equal bytes */
};

struct open_counts {
	__u64 opens;
	__u64 failed;
};

/* The record of a syscall exit tracepoint (events/syscalls/sys_exit_*\/format): the common header,
 * __syscall_nr, the result. Stable since syscall tracepoints exist; declared here rather than
 * taken from vmlinux.h, whose types would be CO-RE relocations and make libbpf load the kernel's
 * whole BTF. */
struct syscall_exit {
	__u64 common;
	__s32 nr;
	__u32 pad;
	__s64 ret;
};

/* The record of a syscall enter tracepoint: the header, __syscall_nr, the six arguments. */
struct syscall_enter {
	__u64 common;
	__s32 nr;
	__u32 pad;
	__u64 args[6];
};

/* The user registers saved at syscall entry (struct pt_regs, whose layout is the ptrace ABI), as far
 * as the arguments. bpf_task_pt_regs() points the verifier at the kernel's struct pt_regs, so these
 * loads are checked against its BTF; declared here for the same reason as syscall_exit. On arm64
 * x0 is overwritten by the result, but every argument read here is x1 or later. */
#if defined(__TARGET_ARCH_x86)
struct syscall_regs {
	__u64 r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di;
};
#define ARG0(r) ((r)->di)
#define ARG1(r) ((r)->si)
#define ARG2(r) ((r)->dx)
#elif defined(__TARGET_ARCH_arm64)
struct syscall_regs {
	__u64 regs[3];
};
#define ARG1(r) ((r)->regs[1])
#define ARG2(r) ((r)->regs[2])
#else
#error "opensnoop reads syscall arguments from saved registers: add this architecture's layout"
#endif

const volatile __u32 cfg_tgid = 0;                      /* 0: every process */
const volatile __u64 cfg_comm[2] = {};                  /* the comm, NUL-padded */
const volatile bool cfg_filter_comm = false;
const volatile bool cfg_failed_only = false;
const volatile __u32 cfg_prefix_len = 0;                /* 0: every path */
const volatile char cfg_prefix[PATH_BYTES] = {};
const volatile bool cfg_count = false;                  /* count per comm, emit nothing */
/* Records are submitted without waking the reader, which polls on a timeout, except when the
 * ring's unread data crosses a multiple of this: one wakeup per that many bytes at any rate. */
const volatile __u64 cfg_wakeup_bytes = 1 << 20;

DEFINE_RINGBUF(events, struct open_event, 1 << 23);  /* Python sets the size */
BTF_EXPORT(enum open_call, call);

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 10240);
	__type(key, char[COMM_BYTES]);
	__type(value, struct open_counts);
} counts SEC(".maps");

/* A call's arguments from its entry to its exit, by thread (stash_* programs only; Python shrinks
 * the map to one entry when they are not loaded). */
struct open_args {
	__u64 filename;
	__u64 flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u64);     /* bpf_get_current_pid_tgid() */
	__type(value, struct open_args);
} stash SEC(".maps");

/* Paths are read here in count mode with a prefix filter, where no ring record holds them. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, char[PATH_BYTES]);
} scratch SEC(".maps");

static __always_inline bool wanted_process(__u64 id)
{
	if (cfg_tgid && (__u32)(id >> 32) != cfg_tgid)
		return false;
	if (cfg_filter_comm) {
		__u64 comm[2] = {};

		bpf_get_current_comm(comm, sizeof(comm));
		if (comm[0] != cfg_comm[0] || comm[1] != cfg_comm[1])
			return false;
	}
	return true;
}

/* Reads the path into `buf`; false if a prefix filter is set and the path lacks it. */
static __always_inline bool read_path(char *buf, __u64 filename)
{
	bpf_probe_read_user_str(buf, PATH_BYTES, (const void *)filename);
	if (!cfg_prefix_len)
		return true;
	for (__u32 i = 0; i < PATH_BYTES - 1; i++) {
		if (i >= cfg_prefix_len)
			break;
		if (buf[i] != cfg_prefix[i])
			return false;
	}
	return true;
}

static __always_inline void count_lost(void)
{
	__u32 key = 0;
	__u64 *lost = bpf_map_lookup_elem(&events_lost, &key);

	if (lost)
		*lost += 1;
}

static __always_inline void count(long ret)
{
	struct open_counts *c, zero = {};
	char comm[COMM_BYTES] = {};

	bpf_get_current_comm(comm, sizeof(comm));
	c = map_lookup_or_init(&counts, comm, &zero);
	if (!c) {       /* the map is full: counted as lost, as a full ring is */
		count_lost();
		return;
	}
	c->opens += 1;          /* per-CPU value: no atomics */
	if (ret < 0)
		c->failed += 1;
}

/* One open returned `ret`; `filename` and `flags` are its arguments. */
static __always_inline void opened(long ret, __u64 filename, __u64 flags, enum open_call call)
{
	struct open_event *e;
	__u64 avail;

	if (cfg_count) {        /* with a prefix filter: done_early() counts the rest */
		__u32 zero = 0;
		char *buf = bpf_map_lookup_elem(&scratch, &zero);

		if (buf && read_path(buf, filename))
			count(ret);
		return;
	}
	e = RINGBUF_RESERVE(events);
	if (!e)
		return;
	/* The ring's memory holds older records: clear what the path may leave unwritten, so a
	 * record never shows another's bytes and equal opens are equal records. */
	__builtin_memset(e->path, 0, sizeof(e->path));
	if (!read_path(e->path, filename)) {
		bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP);
		return;
	}
	__u64 id = bpf_get_current_pid_tgid();

	e->time_ns = bpf_ktime_get_ns();
	e->ret = ret;
	e->flags = flags;
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->call = call;
	__builtin_memset(e->pad, 0, sizeof(e->pad));
	bpf_get_current_comm(e->comm, sizeof(e->comm));  /* NUL-padded by the kernel */
	/* The reserved record is already in the unread data: wake the reader when it took the data
	 * across a multiple of cfg_wakeup_bytes. */
	avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	bpf_ringbuf_submit(e, avail / cfg_wakeup_bytes != (avail - RECORD_SLOT) / cfg_wakeup_bytes ?
			   BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

/* True when this open needs nothing more: filtered out, or counted, where counting needs neither
 * path nor flags (no prefix filter), so the arguments are never read. */
static __always_inline bool done_early(long ret)
{
	if (!wanted_process(bpf_get_current_pid_tgid()) || (cfg_failed_only && ret >= 0))
		return true;
	if (cfg_count && !cfg_prefix_len) {
		count(ret);
		return true;
	}
	return false;
}

static __always_inline struct syscall_regs *saved_regs(void)
{
	return (struct syscall_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
}

#if defined(__TARGET_ARCH_x86)  /* arm64 has no open(2) */
SEC("tracepoint/syscalls/sys_exit_open")
int exit_open(struct syscall_exit *ctx)
{
	struct syscall_regs *regs;

	if (done_early(ctx->ret))
		return 0;
	regs = saved_regs();
	opened(ctx->ret, ARG0(regs), ARG1(regs), CALL_OPEN);
	return 0;
}
#endif

SEC("tracepoint/syscalls/sys_exit_openat")
int exit_openat(struct syscall_exit *ctx)
{
	struct syscall_regs *regs;

	if (done_early(ctx->ret))
		return 0;
	regs = saved_regs();
	opened(ctx->ret, ARG1(regs), ARG2(regs), CALL_OPENAT);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int exit_openat2(struct syscall_exit *ctx)
{
	struct syscall_regs *regs;
	__u64 flags = 0;

	if (done_early(ctx->ret))
		return 0;
	regs = saved_regs();
	/* struct open_how starts with its u64 flags (UAPI). */
	bpf_probe_read_user(&flags, sizeof(flags), (const void *)ARG2(regs));
	opened(ctx->ret, ARG1(regs), flags, CALL_OPENAT2);
	return 0;
}

/* The stash_* programs: arguments kept at entry. Entry applies the filters it can (pid, comm) and
 * keeps nothing when exit will need no argument (counting without a prefix filter); exit takes the
 * arguments out and goes on as above. A call whose entry came before the programs were attached has
 * nothing kept and is not reported. */

static __always_inline void stash_args(__u64 filename, __u64 flags)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct open_args args = { .filename = filename, .flags = flags };

	if (!wanted_process(id) || (cfg_count && !cfg_prefix_len))
		return;
	if (bpf_map_update_elem(&stash, &id, &args, BPF_ANY))
		count_lost();   /* more threads in open at once than the map holds */
}

static __always_inline void stashed_exit(struct syscall_exit *ctx, enum open_call call)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct open_args *stashed, args;

	if (cfg_count && !cfg_prefix_len) {     /* nothing was stashed */
		done_early(ctx->ret);
		return;
	}
	stashed = bpf_map_lookup_elem(&stash, &id);
	if (!stashed)
		return;
	args = *stashed;
	bpf_map_delete_elem(&stash, &id);
	if (done_early(ctx->ret))
		return;
	opened(ctx->ret, args.filename, args.flags, call);
}

#if defined(__TARGET_ARCH_x86)
SEC("tracepoint/syscalls/sys_enter_open")
int stash_enter_open(struct syscall_enter *ctx)
{
	stash_args(ctx->args[0], ctx->args[1]);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_open")
int stash_exit_open(struct syscall_exit *ctx)
{
	stashed_exit(ctx, CALL_OPEN);
	return 0;
}
#endif

SEC("tracepoint/syscalls/sys_enter_openat")
int stash_enter_openat(struct syscall_enter *ctx)
{
	stash_args(ctx->args[1], ctx->args[2]);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat")
int stash_exit_openat(struct syscall_exit *ctx)
{
	stashed_exit(ctx, CALL_OPENAT);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_openat2")
int stash_enter_openat2(struct syscall_enter *ctx)
{
	__u64 flags = 0;

	/* struct open_how starts with its u64 flags (UAPI). */
	bpf_probe_read_user(&flags, sizeof(flags), (const void *)ctx->args[2]);
	stash_args(ctx->args[1], flags);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int stash_exit_openat2(struct syscall_exit *ctx)
{
	stashed_exit(ctx, CALL_OPENAT2);
	return 0;
}
