/* A log2 histogram of the sizes a process asks malloc() for: a uprobe on libc's malloc, reading
 * its first argument. */
#include "bpfscope.bpf.h"

#define SLOTS 32

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SLOTS);     /* slot i: 2^i to 2^(i+1)-1 bytes (slot 0: 0 and 1) */
	__type(key, __u32);
	__type(value, __u64);
} sizes SEC(".maps");

SEC("uprobe")
int BPF_KPROBE(count_malloc, __u64 size)    /* BPF_KPROBE reads a uprobe's arguments the same way */
{
	__u32 slot = log2_u64(size);
	__u64 *count;

	if (slot >= SLOTS)
		slot = SLOTS - 1;
	count = bpf_map_lookup_elem(&sizes, &slot);
	if (count)
		*count += 1;
	return 0;
}
