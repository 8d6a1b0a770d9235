/* A sampling profiler in a few lines: at each tick of a software clock perf event (one per CPU),
 * counts which process name is on the CPU. */
#include "bpfscope.bpf.h"

struct comm {
	char name[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct comm);
	__type(value, __u64);
} samples SEC(".maps");

SEC("perf_event")
int sample_comm(struct bpf_perf_event_data *ctx)
{
	struct comm key = {};
	__u64 *count, zero = 0;

	bpf_get_current_comm(key.name, sizeof(key.name));
	count = map_lookup_or_init(&samples, &key, &zero);
	if (!count)
		return 0;
	*count += 1;
	return 0;
}
