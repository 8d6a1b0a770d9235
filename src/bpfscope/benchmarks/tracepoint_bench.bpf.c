/* The floor under any syscall tracer: an empty program on the exit tracepoint of openat. What it
 * adds to an open is what the kernel charges for running a BPF program there at all (the syscall
 * slow path and the tracepoint's own work), which no tracer on that tracepoint can go below. The
 * same on the enter tracepoint, the hook opensnoop.bt and the count() one-liner use, to compare the
 * two hooks. */
#include "bpfscope.bpf.h"

SEC("tracepoint/syscalls/sys_exit_openat")
int empty_exit_openat(void *ctx)
{
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_openat")
int empty_enter_openat(void *ctx)
{
	return 0;
}
