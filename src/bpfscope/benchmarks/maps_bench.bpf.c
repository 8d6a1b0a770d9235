/* bpfscope bench maps: a hash map of flow-like entries, filled and read from user space only.
 * Its key and value types reach BTF through the map definition, so Python reads them typed. */
#include "bpfscope.bpf.h"

struct bench_flow {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct bench_stats {
	__u64 packets;
	__u64 bytes;
};

/* Above the benchmark's 100,000 entries; Python raises it for larger runs. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 17);
	__type(key, struct bench_flow);
	__type(value, struct bench_stats);
} flows SEC(".maps");
