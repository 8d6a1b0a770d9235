"""The exception tree. Every error is an OSError with an errno, so callers can catch by errno too."""

from __future__ import annotations

import errno as _errno
import os
import re
from typing import Sequence

__all__ = [
    "BpfscopeError",
    "SyscallError",
    "PermissionDeniedError",
    "KernelRefusedError",
    "VerifierError",
    "NotSupportedError",
    "UnsupportedArchitectureError",
    "TypeMismatchError",
    "InterfaceNotFoundError",
]


class BpfscopeError(OSError):
    """Base of every bpfscope error."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(err, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class SyscallError(BpfscopeError):
    """A bpf(), perf_event_open() or libbpf call failed; `errno` is the kernel's."""

    def __init__(self, err: int, op: str, detail: str = "") -> None:
        text = f"{op}: {os.strerror(err)}"
        super().__init__(err, f"{text} ({detail})" if detail else text)
        self.op = op


def _and(names: Sequence[str]) -> str:
    return " and ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + f" and {names[-1]}"


class PermissionDeniedError(SyscallError):
    """EPERM/EACCES outside the verifier where the process lacks `capability` ("CAP_BPF", "CAP_BPF and
    CAP_PERFMON"). With `user_namespace` it holds them only in a user namespace, which bpf() ignores."""

    def __init__(self, err: int, op: str, capability: str = "CAP_BPF", *, user_namespace: bool = False) -> None:
        if user_namespace:
            detail = f"needs {capability} in the initial user namespace; this process has capabilities only in its own"
        else:
            detail = f"needs root or {capability}"
        super().__init__(err, op, detail)
        self.capability = capability


class KernelRefusedError(SyscallError):
    """EPERM/EACCES although the process holds `capabilities`, all the operation needs: the kernel refuses
    it all the same (lockdown, an LSM, a build option). `suspects` names those, as far as they are known."""

    def __init__(self, err: int, op: str, capabilities: Sequence[str], suspects: str) -> None:
        super().__init__(err, op)
        self.capabilities = tuple(capabilities)
        self.suspects = suspects
        self.message = (
            f"{op}: the kernel refused it although this process has {_and(self.capabilities)} "
            f"({os.strerror(err)}; a kernel restriction: {suspects})"
        )


class NotSupportedError(BpfscopeError):
    """The running kernel lacks a feature; the message names it in one line."""

    def __init__(self, feature: str, reason: str = "") -> None:
        msg = f"this kernel does not support {feature}" + (f": {reason}" if reason else "")
        super().__init__(_errno.EOPNOTSUPP, msg)
        self.feature = feature


class UnsupportedArchitectureError(NotSupportedError):
    """bpfscope has no BPF objects (nor syscall numbers) for this machine's architecture."""

    def __init__(self, machine: str, supported: Sequence[str]) -> None:
        super().__init__(f"the {machine} architecture")
        self.machine = machine
        self.message = (f"the {machine} architecture is not supported: bpfscope has BPF objects for "
                        f"{_and(supported)} only")


class TypeMismatchError(BpfscopeError, TypeError):
    """A value does not fit the BTF type of a map key, map value or ring buffer record."""

    def __init__(self, message: str) -> None:
        super().__init__(_errno.EINVAL, message)


class InterfaceNotFoundError(BpfscopeError):
    """A network interface name that does not exist here; the message lists those that do."""

    def __init__(self, name: str, existing: Sequence[str]) -> None:
        super().__init__(
            _errno.ENODEV, f"no interface {name!r}; interfaces here: {', '.join(existing) or 'none'}"
        )
        self.name = name


_SOURCE_LINE = re.compile(r"^; (.*?)(?: @ (\S+:\d+))?$")
_NOISE = re.compile(r"^(processed \d+ insns|verification time|stack depth|-- END|\s*$)")


class VerifierError(SyscallError):
    """The verifier rejected a program. `log` is the whole log; str() is the cause and its source line."""

    def __init__(self, program: str, err: int, log: Sequence[str]) -> None:
        self.program = program
        self.log = tuple(log)
        # From Linux 7.x the log ends in a report ("Verification failed: ...", "Reason:", "Suggestion:")
        # after the classic trace: cause and line come from the trace, the suggestion is kept.
        report = next((i for i, line in enumerate(self.log) if line.startswith("Verification failed:")), None)
        trace = self.log if report is None else self.log[:report]
        self.cause = self._cause(trace)
        self.source_line = self._source_line(trace)
        self.suggestion = self._suggestion(self.log[len(trace):])
        detail = self.cause + (f" at {self.source_line}" if self.source_line else "")
        detail += f" (the kernel suggests: {self.suggestion})" if self.suggestion else ""
        SyscallError.__init__(self, err, f"verifier rejected program {program!r}", detail)
        self.message = f"verifier rejected program {program!r}: {detail}" if detail else self.message

    @staticmethod
    def _cause(log: Sequence[str]) -> str:
        for line in reversed(log):
            if not _NOISE.match(line) and not line.startswith(";"):
                return line.strip()
        return "no verifier log"

    @staticmethod
    def _source_line(log: Sequence[str]) -> str:
        for line in reversed(log):
            match = _SOURCE_LINE.match(line)
            if match:
                code, where = match.groups()
                return f"{where}: {code.strip()}" if where else code.strip()
        return ""

    @staticmethod
    def _suggestion(report: Sequence[str]) -> str:
        if "Suggestion:" not in report:
            return ""
        words = []
        for line in report[report.index("Suggestion:") + 1:]:
            if not line.startswith(" "):
                break
            words.append(line.strip())
        return " ".join(words)

    def tail(self, lines: int = 20) -> list[str]:
        """The last `lines` lines of the log, where the rejection is explained."""
        return list(self.log[-lines:])
