/* bpfscope biolatency: block I/O latency as log2 histograms per disk and operation, kept in the kernel,
 * with the time a request waited in a queue and the time the device took apart.
 *
 * A request is inserted into a queue (block_rq_insert: a scheduler's, or the dispatch list; one that
 * goes straight to the driver is never inserted), issued to the device (block_rq_issue) and completed
 * (block_rq_complete). Its times are kept in `started` from its issue (or insert) to its completion,
 * where its device time (issue to completion) and, if it was inserted, its queue time (insert to issue)
 * go into the histograms of its disk and operation (`hists`, per CPU). A completion whose issue came
 * before the programs were attached is not counted. No atomics, no ring: Python reads the histograms in
 * one batch.
 *
 * Two forms of the same three programs; Python loads one:
 * - tp_btf (Linux 5.11+, where the block tracepoints pass the request alone: Feature.TP_BTF and
 *   features.tracepoint_arguments): the struct request itself; a request is known by its address.
 * - tracepoint: the records carry the disk, the first sector and the operation as letters (rwbs); a
 *   request is known by its disk and first sector. A request that changes its first sector between
 *   insert and issue (a bio merged in front of it) has no queue time. */
#include "bpfscope.bpf.h"

#define HIST_SLOTS 64           /* log2 buckets of a u64 */
#define MINOR_BITS 20           /* the kernel's dev_t: major << 20 | minor */
#define REQ_OP_MASK 0xff        /* the operation in cmd_flags' low bits (REQ_OP_BITS, 8 since 4.10) */

/* The operations shown; the names Python shows come from this enum. */
enum io_op {
	IO_READ = 0,
	IO_WRITE = 1,
	IO_FLUSH = 2,
	IO_DISCARD = 3,
	IO_OTHER = 4,           /* secure erase, write zeroes, zone and driver operations */
};

struct io_key {
	__u32 dev;              /* the disk, as the kernel numbers it: major << 20 | first minor */
	__u32 op;               /* enum io_op */
};

struct io_hist {
	__u64 slots[HIST_SLOTS];        /* slot i: times in [2^i, 2^(i+1)) units; slot 0 also holds 0 */
	__u64 count;
	__u64 sum_ns;                   /* their total, in ns whatever the unit */
};

struct io_hists {
	struct io_hist queue;           /* insert to issue: requests that were inserted */
	struct io_hist device;          /* issue to completion: every request completed */
};

/* A request: its address (tp_btf), or its disk and first sector (tracepoint). */
struct rq_key {
	__u64 id;
	__u64 sector;
};

struct rq_times {
	__u64 inserted_ns;              /* 0: not inserted while we watched */
	__u64 issued_ns;                /* 0: not issued yet */
	__u32 dev;
	__u32 op;
};

const volatile __u32 cfg_dev = 0;               /* only this disk; 0: every disk */
const volatile __u64 cfg_unit_ns = 1000;        /* histogram unit: 1 ns, 1000 us, 1000000 ms */

BTF_EXPORT(enum io_op, op);

/* Requests in flight. LRU: a request whose completion is never seen (merged into another, or its
 * program run skipped) leaves an entry that newer ones push out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct rq_key);
	__type(value, struct rq_times);
} started SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);      /* disks x operations */
	__uint(map_flags, BPF_F_NO_PREALLOC);   /* memory for the disks seen, not for all CPUs x 1024 */
	__type(key, struct io_key);
	__type(value, struct io_hists);
} hists SEC(".maps");

/* Completions not counted because `hists` was full. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

/* A new disk and operation's histograms start from this (too big for the stack). */
static const struct io_hists empty_hists;

static __always_inline void add(struct io_hist *h, __u64 ns)
{
	h->slots[log2_u64(ns / cfg_unit_ns) & (HIST_SLOTS - 1)] += 1;
	h->count += 1;
	h->sum_ns += ns;
}

static __always_inline void inserted(struct rq_key *key)
{
	struct rq_times times = { .inserted_ns = bpf_ktime_get_ns() };

	bpf_map_update_elem(&started, key, &times, BPF_ANY);
}

static __always_inline void issued(struct rq_key *key, __u32 dev, enum io_op op)
{
	struct rq_times *times, fresh = {};

	if (cfg_dev && dev != cfg_dev)
		return;
	times = bpf_map_lookup_elem(&started, key);
	if (!times)
		times = &fresh;
	times->issued_ns = bpf_ktime_get_ns();
	times->dev = dev;
	times->op = op;
	if (times == &fresh)
		bpf_map_update_elem(&started, key, &fresh, BPF_ANY);
}

static __always_inline void completed(struct rq_key *key)
{
	__u64 now = bpf_ktime_get_ns();
	struct rq_times *times = bpf_map_lookup_elem(&started, key);
	struct io_key hist_key = {};
	struct io_hists *h;

	if (!times)
		return;
	if (!times->issued_ns) {        /* inserted, then issued on a disk left out (cfg_dev) */
		bpf_map_delete_elem(&started, key);
		return;
	}
	hist_key.dev = times->dev;
	hist_key.op = times->op;
	h = map_lookup_or_init(&hists, &hist_key, &empty_hists);
	if (h) {
		add(&h->device, now - times->issued_ns);
		if (times->inserted_ns && times->inserted_ns <= times->issued_ns)
			add(&h->queue, times->issued_ns - times->inserted_ns);
	} else {
		__u32 zero = 0;
		__u64 *n = bpf_map_lookup_elem(&lost, &zero);

		if (n)
			*n += 1;        /* per-CPU slot: no atomic needed */
	}
	bpf_map_delete_elem(&started, key);
}

/* --- tp_btf: the request itself --- */

/* Before 5.17 a request named its disk itself. */
struct request___with_disk {
	struct gendisk *rq_disk;
} __attribute__((preserve_access_index));

static __always_inline __u32 request_dev(struct request *rq)
{
	struct gendisk *disk;

	if (bpf_core_field_exists(((struct request___with_disk *)rq)->rq_disk))
		disk = BPF_CORE_READ((struct request___with_disk *)rq, rq_disk);
	else
		disk = BPF_CORE_READ(rq, q, disk);
	return (BPF_CORE_READ(disk, major) << MINOR_BITS) | BPF_CORE_READ(disk, first_minor);
}

static __always_inline enum io_op request_op(struct request *rq)
{
	/* enum req_op's values, fixed since 4.10 */
	switch (BPF_CORE_READ(rq, cmd_flags) & REQ_OP_MASK) {
	case 0:
		return IO_READ;
	case 1:
		return IO_WRITE;
	case 2:
		return IO_FLUSH;
	case 3:
		return IO_DISCARD;
	default:
		return IO_OTHER;
	}
}

SEC("tp_btf/block_rq_insert")
int BPF_PROG(insert_btf, struct request *rq)
{
	struct rq_key key = { .id = (__u64)rq };

	inserted(&key);
	return 0;
}

SEC("tp_btf/block_rq_issue")
int BPF_PROG(issue_btf, struct request *rq)
{
	struct rq_key key = { .id = (__u64)rq };

	issued(&key, request_dev(rq), request_op(rq));
	return 0;
}

SEC("tp_btf/block_rq_complete")
int BPF_PROG(complete_btf, struct request *rq, int error, unsigned int nr_bytes)
{
	struct rq_key key = { .id = (__u64)rq };

	/* A part of the request: the rest completes later (the last part is all that is left of it). */
	if (nr_bytes < BPF_CORE_READ(rq, __data_len))
		return 0;
	completed(&key);
	return 0;
}

/* --- tracepoint: the records --- */

/* The operation from rwbs (blk_fill_rwbs): an F for a preflush, then the operation's letter (F for a
 * flush, D for a discard or secure erase, N for any other), then letters for flags. */
static __always_inline enum io_op rwbs_op(char first, char second)
{
	char letter = first;

	if (first == 'F' && (second == 'R' || second == 'W' || second == 'D' || second == 'N'))
		letter = second;
	switch (letter) {
	case 'R':
		return IO_READ;
	case 'W':
		return IO_WRITE;
	case 'F':
		return IO_FLUSH;
	case 'D':
		return IO_DISCARD;
	default:
		return IO_OTHER;
	}
}

/* The start of every block_rq_* record (events/block/block_rq_*\/format): the common header, the disk,
 * the first sector; the same on every kernel. Declared here rather than taken from vmlinux.h, so that
 * they are plain loads (block_rq_complete's record type has had two names). */
struct block_rq_record {
	__u64 common;
	__u32 dev;
	__u32 pad;
	__u64 sector;
};

SEC("tracepoint/block/block_rq_insert")
int insert_tp(struct block_rq_record *ctx)
{
	struct rq_key key = { .id = ctx->dev, .sector = ctx->sector };

	if (cfg_dev && ctx->dev != cfg_dev)
		return 0;
	inserted(&key);
	return 0;
}

/* rwbs moved when ioprio joined the record (6.x): its offset comes from the kernel's BTF. */
SEC("tracepoint/block/block_rq_issue")
int issue_tp(struct trace_event_raw_block_rq *ctx)
{
	struct block_rq_record *record = (struct block_rq_record *)ctx;
	struct rq_key key = { .id = record->dev, .sector = record->sector };

	issued(&key, record->dev, rwbs_op(ctx->rwbs[0], ctx->rwbs[1]));
	return 0;
}

SEC("tracepoint/block/block_rq_complete")
int complete_tp(struct block_rq_record *ctx)
{
	struct rq_key key = { .id = ctx->dev, .sector = ctx->sector };

	completed(&key);
	return 0;
}
