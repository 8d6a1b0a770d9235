/* Maps of maps for tests/kernel/test_maps_of_maps.py, driven by BPF_PROG_TEST_RUN: count_inner adds 1
 * to key 1 of the map at key 0 of `by_slot` (an array of maps whose slot 0 holds tally_a from load on)
 * and to key 2 of the map at key cfg_tenant of `by_tenant` (a hash of maps, empty at load). The tests
 * put other maps there and read which one counted. */
#include "bpfscope.bpf.h"

struct tally {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} tally_a SEC(".maps"), tally_b SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct tally);
} by_slot SEC(".maps") = {
	.values = { [0] = &tally_a },
};

struct tenant_tally {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 8);
	__type(key, __u32);
	__array(values, struct tenant_tally);
} by_tenant SEC(".maps");

const volatile __u32 cfg_tenant = 7;

static __always_inline void add_one(void *inner, __u32 key)
{
	__u64 one = 1, *count;

	if (!inner)
		return;
	count = bpf_map_lookup_elem(inner, &key);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(inner, &key, &one, BPF_NOEXIST);
}

SEC("xdp")
int count_inner(struct xdp_md *ctx)
{
	__u32 zero = 0, tenant = cfg_tenant;

	add_one(bpf_map_lookup_elem(&by_slot, &zero), 1);
	add_one(bpf_map_lookup_elem(&by_tenant, &tenant), 2);
	return XDP_PASS;
}
