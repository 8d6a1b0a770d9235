/* The floor under any syscall tracer: an empty program on the exit tracepoint of openat. What it
 * adds to an open is what the kernel charges for running a BPF program there at all (the syscall
 * slow path and the tracepoint's own work), which no tracer on that tracepoint can go below. */
#include "bpfscope.bpf.h"

SEC("tracepoint/syscalls/sys_exit_openat")
int empty_exit_openat(void *ctx)
{
	return 0;
}
