/* bpfscope opensnoop: every open(2), openat(2) and openat2(2), from the syscall tracepoints. The
 * enter tracepoint stashes the path pointer and flags in the thread's task storage; the exit
 * tracepoint reads the path (the kernel has just read it, so it is paged in) and emits one event
 * with the result, or, in count mode, adds one to the comm's per-CPU counter and emits nothing.
 * Counting without a path filter needs no path: then only the exit tracepoints are attached.
 *
 * Every filter runs here, as early as it can: pid and comm at enter (a filtered-out open costs no
 * stash), failed-only at exit, the path prefix once the path is read. The knobs are .rodata, so the
 * verifier sees them as constants and prunes what is switched off. */
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
	char path[PATH_BYTES];
};

struct open_counts {
	__u64 opens;
	__u64 failed;
};

/* What enter leaves for exit. filename == 0: nothing pending. */
struct pending {
	__u64 filename;
	__u64 flags;
	__u32 call;
	__u32 pad;
};

/* The records of the syscall tracepoints (events/syscalls/sys_{enter,exit}_*\/format): the common
 * header, __syscall_nr, then each argument or the result as 8 bytes. Stable since syscall
 * tracepoints exist; declared here rather than taken from vmlinux.h, whose types would be CO-RE
 * relocations and make libbpf load the kernel's whole BTF. */
struct syscall_enter {
	__u64 common;
	__s32 nr;
	__u32 pad;
	__u64 args[6];
};

struct syscall_exit {
	__u64 common;
	__s32 nr;
	__u32 pad;
	__s64 ret;
};

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
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct pending);
} pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 10240);
	__type(key, char[COMM_BYTES]);
	__type(value, struct open_counts);
} counts SEC(".maps");

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

static __always_inline void enter(__u64 filename, __u64 flags, enum open_call call)
{
	struct pending *p;

	if (!wanted_process(bpf_get_current_pid_tgid()))
		return;
	p = bpf_task_storage_get(&pending, bpf_get_current_task_btf(), 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!p)
		return;
	p->filename = filename;
	p->flags = flags;
	p->call = call;
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

static __always_inline void count(long ret)
{
	struct open_counts *c, zero = {};
	char comm[COMM_BYTES] = {};

	bpf_get_current_comm(comm, sizeof(comm));
	c = bpf_map_lookup_elem(&counts, comm);
	if (!c) {
		bpf_map_update_elem(&counts, comm, &zero, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&counts, comm);
		if (!c) {       /* the map is full: counted as lost, as a full ring is */
			__u32 key = 0;
			__u64 *lost = bpf_map_lookup_elem(&events_lost, &key);

			if (lost)
				*lost += 1;
			return;
		}
	}
	c->opens += 1;          /* per-CPU value: no atomics */
	if (ret < 0)
		c->failed += 1;
}

static __always_inline void leave(long ret)
{
	struct open_event *e;
	struct pending *p;
	struct pending taken;
	__u64 id = bpf_get_current_pid_tgid();
	__u64 avail;

	if (cfg_count && !cfg_prefix_len) {
		/* Counting needs neither path nor flags: the enter programs stay unloaded (Python
		 * switches them off) and this one filters and counts alone. */
		if (!wanted_process(id) || (cfg_failed_only && ret >= 0))
			return;
		count(ret);
		return;
	}
	if (cfg_tgid && (__u32)(id >> 32) != cfg_tgid)
		return;
	p = bpf_task_storage_get(&pending, bpf_get_current_task_btf(), 0, 0);
	if (!p || !p->filename)
		return;
	taken = *p;
	p->filename = 0;
	if (cfg_failed_only && ret >= 0)
		return;
	if (cfg_count) {
		if (cfg_prefix_len) {
			__u32 zero = 0;
			char *buf = bpf_map_lookup_elem(&scratch, &zero);

			if (!buf || !read_path(buf, taken.filename))
				return;
		}
		count(ret);
		return;
	}
	e = RINGBUF_RESERVE(events);
	if (!e)
		return;
	if (!read_path(e->path, taken.filename)) {
		bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP);
		return;
	}
	e->time_ns = bpf_ktime_get_ns();
	e->ret = ret;
	e->flags = taken.flags;
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->call = taken.call;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	/* The reserved record is already in the unread data: wake the reader when it took the data
	 * across a multiple of cfg_wakeup_bytes. */
	avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	bpf_ringbuf_submit(e, avail / cfg_wakeup_bytes != (avail - RECORD_SLOT) / cfg_wakeup_bytes ?
			   BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

SEC("tracepoint/syscalls/sys_enter_open")
int enter_open(struct syscall_enter *ctx)
{
	enter(ctx->args[0], ctx->args[1], CALL_OPEN);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_openat")
int enter_openat(struct syscall_enter *ctx)
{
	enter(ctx->args[1], ctx->args[2], CALL_OPENAT);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_openat2")
int enter_openat2(struct syscall_enter *ctx)
{
	__u64 flags = 0;

	/* struct open_how starts with its u64 flags (UAPI). */
	bpf_probe_read_user(&flags, sizeof(flags), (const void *)ctx->args[2]);
	enter(ctx->args[1], flags, CALL_OPENAT2);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_open")
int exit_open(struct syscall_exit *ctx)
{
	leave(ctx->ret);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat")
int exit_openat(struct syscall_exit *ctx)
{
	leave(ctx->ret);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int exit_openat2(struct syscall_exit *ctx)
{
	leave(ctx->ret);
	return 0;
}
