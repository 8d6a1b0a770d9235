/* Sizes read(2) returned, as a log2 histogram by command (read_sizes.yaml exports it). At each
 * return from read() that is not an error, the count of the (comm, slot) pair grows by one and its
 * byte total by the size; slot is floor(log2(size)), 0 for sizes 0 and 1. Per-CPU hash: one lookup
 * per read, no atomics. */
#include "bpfscope.bpf.h"

/* The record of a syscall exit tracepoint (events/syscalls/sys_exit_read/format), declared here
 * rather than taken from vmlinux.h: one CO-RE relocation makes libbpf load the kernel's whole BTF. */
struct syscall_exit {
	__u64 common;
	__s32 nr;
	__u32 pad;
	__s64 ret;
};

struct size_key {
	char comm[16];
	__u32 slot;
};

struct size_count {
	__u64 count;
	__u64 bytes;            /* the histogram's exact _sum */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);             /* (comm, slot) pairs; when full, new pairs go uncounted */
	__type(key, struct size_key);
	__type(value, struct size_count);
} read_sizes SEC(".maps");

SEC("tracepoint/syscalls/sys_exit_read")
int count_read_size(struct syscall_exit *ctx)
{
	struct size_key key = {};
	struct size_count *slot;
	__s64 size = ctx->ret;

	if (size < 0)
		return 0;
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	key.slot = log2_u64(size);
	slot = map_lookup_or_init(&read_sizes, &key, &(struct size_count){});
	if (!slot)
		return 0;
	slot->count += 1;
	slot->bytes += size;
	return 0;
}
