/* One map of each kind the library types from BTF; the tests fill and read them from Python. */
#include "bpfscope.bpf.h"

enum test_flow_state { TEST_FLOW_NEW = 1, TEST_FLOW_ESTABLISHED = 2, TEST_FLOW_CLOSED = 3 };

struct test_flow_key {
	__u32 saddr;
	__u16 sport;
	__u8 proto;
	/* one byte of padding: BTF offsets, not a hand-copied layout, place the fields */
};

struct flow_counters {
	__u64 packets;
	__u64 bytes;
	char comm[16];
	enum test_flow_state state;
	__s32 delta;
};

struct lpm_v4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__type(key, struct test_flow_key);
	__type(value, struct flow_counters);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} recent SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct flow_counters);
} per_cpu_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);   /* 4 bytes: the kernel pads each CPU's slot to 8 */
} per_cpu_small SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 256);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v4_key);
	__type(value, __u32);
} prefixes SEC(".maps");

const volatile __u32 cfg_increment = 1;

/* Adds cfg_increment to every CPU-local slot of per_cpu_small[0]: proves .rodata reaches the kernel. */
SEC("xdp")
int bump_counters(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u32 *slot = bpf_map_lookup_elem(&per_cpu_small, &zero);

	if (slot)
		*slot += cfg_increment;
	return XDP_PASS;
}
