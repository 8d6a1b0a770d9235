/* Signals delivered, by signal and the receiving task's cgroup (signals.yaml exports them). The
 * signal:signal_deliver tracepoint runs in the receiver as it takes the signal, so the current
 * cgroup is the receiver's; signal_generate runs in the sender and names the receiver only by pid.
 * Per-CPU hash: one lookup per signal, no atomics. */
#include "bpfscope.bpf.h"

/* Signal numbers as x86_64 and arm64 both have them; the enum decoder shows these names and a
 * number for the real-time signals. vmlinux.h has no SIG* names: they are macros. */
enum signal_number {
	SIGHUP = 1, SIGINT, SIGQUIT, SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGKILL, SIGUSR1,
	SIGSEGV, SIGUSR2, SIGPIPE, SIGALRM, SIGTERM, SIGSTKFLT, SIGCHLD, SIGCONT, SIGSTOP, SIGTSTP,
	SIGTTIN, SIGTTOU, SIGURG, SIGXCPU, SIGXFSZ, SIGVTALRM, SIGPROF, SIGWINCH, SIGIO, SIGPWR, SIGSYS,
};

_Static_assert(SIGKILL == 9 && SIGUSR1 == 10 && SIGTERM == 15 && SIGSYS == 31, "signal numbers");

/* The start of events/signal/signal_deliver/format, declared here rather than taken from
 * vmlinux.h: one CO-RE relocation makes libbpf load the kernel's whole BTF. */
struct signal_deliver_record {
	__u64 common;
	__s32 sig;
};

struct signal_key {
	__u64 cgroup;           /* cgroup v2 id of the receiver */
	enum signal_number sig;
	__u32 pad;              /* explicit, so the key has no padding left unset */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct signal_key);
	__type(value, __u64);
} signals SEC(".maps");

SEC("tracepoint/signal/signal_deliver")
int count_signal(struct signal_deliver_record *ctx)
{
	struct signal_key key = {};
	__u64 *count;

	key.cgroup = bpf_get_current_cgroup_id();
	key.sig = ctx->sig;
	count = map_lookup_or_init(&signals, &key, &(__u64){0});
	if (!count)
		return 0;
	*count += 1;
	return 0;
}
