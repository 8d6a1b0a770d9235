/* Spin locks for state kept in maps that cannot hold one (LRU hash maps), for kernels without the
 * BPF atomics of Linux 5.12 (compare-and-swap, fetch-or, exchange). The locks live in an array
 * beside the state, and a key takes the lock its address hashes to: two keys that share a lock only
 * wait for each other, never mix their state. While a lock is held no helper may be called, so
 * callers look their state up first, lock, update, unlock, and only then emit. */
#ifndef BPFSCOPE_STRIPES_BPF_H
#define BPFSCOPE_STRIPES_BPF_H

#include "bpfscope.bpf.h"

#define LOCK_STRIPES_LOG2 10
#define LOCK_STRIPES (1 << LOCK_STRIPES_LOG2)

struct stripe {
	struct bpf_spin_lock lock;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LOCK_STRIPES);
	__type(key, __u32);
	__type(value, struct stripe);
} stripes SEC(".maps");

/* The lock of a 16-byte address and a `salt` that tells apart keys of one address (a prefix length,
 * an event kind): the words mixed by multiplication (Fibonacci hashing). */
static __always_inline struct stripe *stripe_of(const __u8 *addr, __u32 salt)
{
	const __u32 *words = (const __u32 *)addr;
	__u32 h = salt;

	h = (h ^ words[0]) * 0x9e3779b1;
	h = (h ^ words[1]) * 0x9e3779b1;
	h = (h ^ words[2]) * 0x9e3779b1;
	h = (h ^ words[3]) * 0x9e3779b1;
	h >>= 32 - LOCK_STRIPES_LOG2;
	return bpf_map_lookup_elem(&stripes, &h);
}

#endif
