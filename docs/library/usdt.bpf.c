/* The USDT probe python:gc__start, which CPython fires at each garbage collection with its generation. */
#include "bpfscope.bpf.h"
#include <bpf/usdt.bpf.h>

__u64 collections;
__s32 last_generation = -1;

SEC("usdt")
int BPF_USDT(count_collections, int generation)
{
	__sync_fetch_and_add(&collections, 1);
	last_generation = generation;
	return 0;
}
