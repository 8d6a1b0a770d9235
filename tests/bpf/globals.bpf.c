/* Global variables for tests/kernel/test_globals.py, driven by BPF_PROG_TEST_RUN. count_runs counts
 * its runs in .bss, adds `step` (.data, which the tests write) times cfg_scale (.rodata) to `total`,
 * counts packets and bytes in a struct, and returns `verdict`, from a section of its own
 * (.data.custom): what Python writes there decides what the program does next. */
#include "bpfscope.bpf.h"

struct run_stats {
	__u64 packets;
	__u64 bytes;
};

__u64 runs;
__u64 total;
struct run_stats stats;
__u32 step = 1;
char label[8] = "start";
__u32 verdict SEC(".data.custom") = XDP_PASS;
__u64 custom_runs SEC(".data.custom") = 0;
const volatile __u32 cfg_scale = 1;

SEC("xdp")
int count_runs(struct xdp_md *ctx)
{
	__u32 action = verdict;

	__sync_fetch_and_add(&runs, 1);
	__sync_fetch_and_add(&total, step * cfg_scale);
	__sync_fetch_and_add(&stats.packets, 1);
	__sync_fetch_and_add(&stats.bytes, xdp_data_end(ctx) - xdp_data(ctx));
	__sync_fetch_and_add(&custom_runs, 1);
	return action <= XDP_TX ? action : XDP_ABORTED;
}
