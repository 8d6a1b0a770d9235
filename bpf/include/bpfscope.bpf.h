/* Common definitions for every bpfscope BPF program. */
#ifndef BPFSCOPE_BPF_H
#define BPFSCOPE_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

/* libbpf 1.1's bpf_tracing.h has no uprobe spelling; a uprobe's context is a kprobe's pt_regs, so
 * libbpf 1.2 and later spell the same thing. */
#ifndef BPF_UPROBE
#define BPF_UPROBE(name, args...) BPF_KPROBE(name, ##args)
#endif
#ifndef BPF_URETPROBE
#define BPF_URETPROBE(name, args...) BPF_KRETPROBE(name, ##args)
#endif

char LICENSE[] SEC("license") = "GPL";

/* Puts `type` into the object's BTF under a name Python can find (`__btf_export_<name>`). Types
 * used only through local variables never reach BTF, and libbpf 1.1 rejects a value type on a
 * ring buffer map; an unused global pointer fixes both for 8 bytes of .bss. */
#define BTF_EXPORT(type, name) type *__btf_export_##name __attribute__((unused))

/* A ring buffer of `record` events with a per-CPU count of failed reserves beside it, so the
 * reader can report loss instead of hiding it. The Python side finds the record type and the
 * loss counter by the ring's name. */
#define DEFINE_RINGBUF(name, record, bytes)                                   \
	struct {                                                              \
		__uint(type, BPF_MAP_TYPE_RINGBUF);                           \
		__uint(max_entries, bytes);                                   \
	} name SEC(".maps");                                                  \
	struct {                                                              \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);                      \
		__uint(max_entries, 1);                                       \
		__type(key, __u32);                                           \
		__type(value, __u64);                                         \
	} name##_lost SEC(".maps");                                           \
	BTF_EXPORT(record, name)

/* The packet bounds of an XDP context. struct xdp_md's first two fields are UAPI, fixed since 4.8;
 * reading them through vmlinux.h's type would be a CO-RE relocation, and one relocation makes
 * libbpf load the kernel's whole BTF at load time. */
struct xdp_bounds {
	__u32 data;
	__u32 data_end;
};

/* The value at `key` in a hash map, made from `init` first if the key is new (as libbpf-tools'
 * bpf_map_lookup_or_try_init); NULL only when the map is full. BPF_NOEXIST: if another CPU made the
 * entry in between, its value stands and the second lookup finds it. */
static __always_inline void *map_lookup_or_init(void *map, const void *key, const void *init)
{
	void *value = bpf_map_lookup_elem(map, key);

	if (value)
		return value;
	bpf_map_update_elem(map, key, init, BPF_NOEXIST);
	return bpf_map_lookup_elem(map, key);
}

/* floor(log2(v)), 0 for 0 and 1: the slot of a log2 histogram (slot i counts 2^i to 2^(i+1)-1),
 * without a loop, so the verifier sees straight-line code. */
static __always_inline __u32 log2_u32(__u32 v)
{
	__u32 r, shift;

	r = (v > 0xFFFF) << 4; v >>= r;
	shift = (v > 0xFF) << 3; v >>= shift; r |= shift;
	shift = (v > 0xF) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3) << 1; v >>= shift; r |= shift;
	return r | (v >> 1);
}

static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 hi = v >> 32;

	return hi ? log2_u32(hi) + 32 : log2_u32(v);
}

static __always_inline void *xdp_data(struct xdp_md *ctx)
{
	return (void *)(long)((struct xdp_bounds *)ctx)->data;
}

static __always_inline void *xdp_data_end(struct xdp_md *ctx)
{
	return (void *)(long)((struct xdp_bounds *)ctx)->data_end;
}

/* The packet bounds and length of a tc context. struct __sk_buff is UAPI: len at 0, data at 76,
 * data_end at 80, fixed since 4.7. Reading them through vmlinux.h's type would be a CO-RE
 * relocation, and one relocation makes libbpf load the kernel's whole BTF at load time. */
struct skb_bounds {
	__u32 len;
	__u32 unused[18];
	__u32 data;
	__u32 data_end;
};

_Static_assert(__builtin_offsetof(struct skb_bounds, data) == 76, "__sk_buff.data is at 76");

static __always_inline void *ringbuf_reserve_counted(void *ring, void *lost, __u64 size)
{
	void *record = bpf_ringbuf_reserve(ring, size, 0);

	if (!record) {
		__u32 zero = 0;
		__u64 *count = bpf_map_lookup_elem(lost, &zero);

		if (count)
			*count += 1;   /* per-CPU slot: no atomic needed */
	}
	return record;
}

/* Reserves one record in ring `name`, counting the failure when the ring is full. */
#define RINGBUF_RESERVE(name)                                                 \
	((typeof(__btf_export_##name))ringbuf_reserve_counted(                \
		&name, &name##_lost, sizeof(*__btf_export_##name)))

#endif
