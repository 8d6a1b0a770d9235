"""Error messages users read: one line, naming the cause."""

from __future__ import annotations

import errno

from bpfscope.errors import (
    InterfaceNotFoundError,
    KernelRefusedError,
    PermissionDeniedError,
    SyscallError,
    VerifierError,
)

LOG = """func#0 @0
0: R1=ctx() R10=fp0
; __u64 *count = bpf_map_lookup_elem(&counters, &zero); @ verifier_reject.bpf.c:15
4: (85) call bpf_map_lookup_elem#1    ; R0_w=map_value_or_null(id=1,map=counters,ks=4,vs=8)
; *count += 1; @ verifier_reject.bpf.c:17
5: (79) r1 = *(u64 *)(r0 +0)
R0 invalid mem access 'map_value_or_null'
verification time 25 usec
stack depth 4
processed 6 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0
""".splitlines()


def test_verifier_error_summarises_cause_and_source_line():
    err = VerifierError("unchecked_lookup", errno.EACCES, LOG)
    assert err.cause == "R0 invalid mem access 'map_value_or_null'"
    assert err.source_line == "verifier_reject.bpf.c:17: *count += 1;"
    assert str(err) == ("verifier rejected program 'unchecked_lookup': R0 invalid mem access "
                        "'map_value_or_null' at verifier_reject.bpf.c:17: *count += 1;")
    assert err.errno == errno.EACCES and isinstance(err, OSError)
    assert err.tail(2) == LOG[-2:]


# Linux 7.3 (Debian's trixie-backports kernel, in a vmtest guest): the trace, then a report.
LOG_7_3 = """; *count += 1; @ verifier_reject.bpf.c:18
7: (79) r1 = *(u64 *)(r0 +0)
R0 invalid mem access 'map_value_or_null'

Verification failed: Register Type Safety: Invalid dereference

Reason:
  R0 may be NULL here (a nullable map value pointer). The program could dereference NULL on this
  path, so the verifier cannot prove this access is safe.

At:
  unchecked_lookup @ verifier_reject.bpf.c:18:9
  Source context:
  >>> 18 |         *count += 1;
         |         ^-- error: invalid dereference of R0 (a nullable map value pointer)

Suggestion:
  Add a NULL check before the access and dereference the pointer only on the non-NULL path.

processed 7 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0
""".splitlines()


def test_verifier_error_of_a_kernel_that_reports_takes_the_cause_from_the_trace_and_keeps_the_suggestion():
    err = VerifierError("unchecked_lookup", errno.EACCES, LOG_7_3)
    assert err.cause == "R0 invalid mem access 'map_value_or_null'"
    assert err.source_line == "verifier_reject.bpf.c:18: *count += 1;"
    assert err.suggestion == "Add a NULL check before the access and dereference the pointer only on the non-NULL path."
    assert str(err).endswith("at verifier_reject.bpf.c:18: *count += 1; (the kernel suggests: Add a NULL check "
                             "before the access and dereference the pointer only on the non-NULL path.)")
    assert err.tail(1) == LOG_7_3[-1:]


def test_permission_error_names_the_capability():
    err = PermissionDeniedError(errno.EPERM, "load packets.bpf.o", "CAP_BPF")
    assert "needs root or CAP_BPF" in str(err) and err.errno == errno.EPERM


def test_permission_error_in_a_user_namespace_does_not_offer_root():
    err = PermissionDeniedError(errno.EPERM, "load packets.bpf.o", "CAP_BPF and CAP_NET_ADMIN", user_namespace=True)
    assert str(err) == ("load packets.bpf.o: Operation not permitted (needs CAP_BPF and CAP_NET_ADMIN in the initial "
                        "user namespace; this process has capabilities only in its own)")


def test_kernel_refusal_names_the_operation_and_what_the_process_holds():
    err = KernelRefusedError(errno.EPERM, "load program 'trace_entry' of fentry.bpf.o", ["CAP_BPF", "CAP_PERFMON"],
                             "lockdown (integrity), an LSM (landlock, bpf) or a build option")
    assert str(err) == ("load program 'trace_entry' of fentry.bpf.o: the kernel refused it although this process "
                        "has CAP_BPF and CAP_PERFMON (Operation not permitted; a kernel restriction: lockdown "
                        "(integrity), an LSM (landlock, bpf) or a build option)")
    assert isinstance(err, SyscallError) and not isinstance(err, PermissionDeniedError)
    assert err.errno == errno.EPERM and err.capabilities == ("CAP_BPF", "CAP_PERFMON")
    assert "needs" not in str(err)


def test_syscall_error_is_an_oserror_with_errno():
    err = SyscallError(errno.EBUSY, "attach xdp")
    assert isinstance(err, OSError) and err.errno == errno.EBUSY
    assert str(err) == "attach xdp: Device or resource busy"


def test_unknown_interface_lists_existing_ones():
    assert str(InterfaceNotFoundError("eth9", ["lo", "eth0"])) == "no interface 'eth9'; interfaces here: lo, eth0"
