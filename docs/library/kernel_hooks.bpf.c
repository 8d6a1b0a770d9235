/* One kernel event, this process opening files (cfg_tgid), seen three ways: a kprobe on the function that
 * opens, an fentry program on it (a BPF trampoline: cheaper, typed arguments), and the BPF LSM's file_open
 * hook, which could refuse the open. Each example loads only its own program (autoload). */
#include "bpfscope.bpf.h"

const volatile __u32 cfg_tgid = 0;
__u64 kprobe_opens, fentry_opens, lsm_opens;

static __always_inline bool ours(void)
{
	return bpf_get_current_pid_tgid() >> 32 == cfg_tgid;
}

SEC("kprobe/do_sys_openat2")
int BPF_KPROBE(count_kprobe, int dfd, const char *filename)
{
	if (ours())
		__sync_fetch_and_add(&kprobe_opens, 1);
	return 0;
}

SEC("fentry/do_sys_openat2")
int BPF_PROG(count_fentry, int dfd, const char *filename, struct open_how *how)
{
	if (ours())
		__sync_fetch_and_add(&fentry_opens, 1);
	return 0;
}

SEC("lsm/file_open")
int BPF_PROG(count_lsm, struct file *file)
{
	if (ours())
		__sync_fetch_and_add(&lsm_opens, 1);
	return 0;                               /* allow; -EPERM would refuse the open */
}
