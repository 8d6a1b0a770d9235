/* Iterators: tasks and their files as records (bpf_seq_write); maps by id, the elements of one map, TCP
 * and UDP sockets (one local port a line) and cgroups (one id a line) as text (bpf_seq_printf). */
#include "bpfscope.bpf.h"

#define AF_INET 2
#define AF_INET6 10

struct task_record {
	__u32 pid; /* the thread */
	__u32 tgid; /* its process */
};

struct file_record {
	__u32 tgid;
	__u32 fd;
};

BTF_EXPORT(struct task_record, task_record);
BTF_EXPORT(struct file_record, file_record);

/* What iter/bpf_map_elem walks in the tests. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} values SEC(".maps");

SEC("iter/task")
int dump_tasks(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	struct task_record record;

	if (!task)
		return 0;
	record.pid = task->pid;
	record.tgid = task->tgid;
	bpf_seq_write(ctx->meta->seq, &record, sizeof(record));
	return 0;
}

SEC("iter/task_file")
int dump_files(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file_record record;

	if (!task || !ctx->file)
		return 0;
	record.tgid = task->tgid;
	record.fd = ctx->fd;
	bpf_seq_write(ctx->meta->seq, &record, sizeof(record));
	return 0;
}

SEC("iter/bpf_map")
int dump_map_ids(struct bpf_iter__bpf_map *ctx)
{
	struct bpf_map *map = ctx->map;

	if (map)
		BPF_SEQ_PRINTF(ctx->meta->seq, "%u\n", map->id);
	return 0;
}

SEC("iter/bpf_map_elem")
int dump_values(struct bpf_iter__bpf_map_elem *ctx)
{
	__u32 *key = ctx->key;
	__u64 *value = ctx->value;

	if (key && value)
		BPF_SEQ_PRINTF(ctx->meta->seq, "%u %llu\n", *key, *value);
	return 0;
}

SEC("iter/tcp")
int dump_tcp_ports(struct bpf_iter__tcp *ctx)
{
	struct sock_common *sk = ctx->sk_common;

	if (sk && (sk->skc_family == AF_INET || sk->skc_family == AF_INET6))
		BPF_SEQ_PRINTF(ctx->meta->seq, "%u\n", sk->skc_num);
	return 0;
}

SEC("iter/udp")
int dump_udp_ports(struct bpf_iter__udp *ctx)
{
	struct udp_sock *udp = ctx->udp_sk;

	if (udp)
		BPF_SEQ_PRINTF(ctx->meta->seq, "%u\n", udp->inet.sk.__sk_common.skc_num);
	return 0;
}

/* Linux 6.1+: the tests load it on its own. */
SEC("iter/cgroup")
int dump_cgroup_ids(struct bpf_iter__cgroup *ctx)
{
	struct cgroup *cgroup = ctx->cgroup;

	if (cgroup)
		BPF_SEQ_PRINTF(ctx->meta->seq, "%llu\n", cgroup->kn->id);
	return 0;
}
