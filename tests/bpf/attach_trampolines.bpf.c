/* Hooks made of BPF trampolines, which some kernels refuse (this project's development kernel does):
 * fentry, fexit and fmod_ret on the functions BPF_PROG_TEST_RUN of a tracing program calls, and a BPF
 * LSM hook counting the test's own socket() calls (cfg_tgid). */
#include "bpfscope.bpf.h"

enum hit {
	HIT_FENTRY = 0,
	HIT_FEXIT = 1,
	HIT_FMOD_RET = 2,
	HIT_LSM = 3,
	HIT_COUNT,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HIT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

BTF_EXPORT(enum hit, hits_key);

const volatile __u32 cfg_tgid = 0;

static __always_inline void count(__u32 key)
{
	__u64 *slot = bpf_map_lookup_elem(&hits, &key);

	if (slot)
		*slot += 1;
}

SEC("fentry/bpf_fentry_test1")
int BPF_PROG(count_fentry, int a)
{
	count(HIT_FENTRY);
	return 0;
}

/* Seen only when bpf_fentry_test1 returned what it always returns (a + 1). */
SEC("fexit/bpf_fentry_test1")
int BPF_PROG(count_fexit, int a, int ret)
{
	if (ret == a + 1)
		count(HIT_FEXIT);
	return 0;
}

SEC("fmod_ret/bpf_modify_return_test")
int BPF_PROG(count_fmod_ret, int a, int *b, int ret)
{
	count(HIT_FMOD_RET);
	return 0; /* 0: the function runs as usual */
}

SEC("lsm/socket_create")
int BPF_PROG(count_socket_create, int family, int type, int protocol, int kern)
{
	if (!kern && (bpf_get_current_pid_tgid() >> 32) == cfg_tgid)
		count(HIT_LSM);
	return 0; /* allowed */
}
