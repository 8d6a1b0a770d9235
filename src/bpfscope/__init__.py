"""bpfscope: eBPF for Python. The core API only; tools live in bpfscope.tools and never load here."""

from .__about__ import __version__
from .errors import (
    BpfscopeError,
    InterfaceNotFoundError,
    NotSupportedError,
    PermissionDeniedError,
    SyscallError,
    TypeMismatchError,
    VerifierError,
)
from .link import Link
from .maps import ArrayMap, HashMap, LpmTrieMap, Map, MapType, PerCpuArrayMap, PerCpuHashMap, UpdateFlags
from .object import Object, ObjectSpec, load, tool_object
from .program import Program, TcDirection, TcMode, TestRunResult, XdpAction, XdpMode
from .ringbuf import RingBuffer

__all__ = [
    "__version__",
    "ArrayMap",
    "BpfscopeError",
    "HashMap",
    "InterfaceNotFoundError",
    "Link",
    "LpmTrieMap",
    "Map",
    "MapType",
    "NotSupportedError",
    "Object",
    "ObjectSpec",
    "PerCpuArrayMap",
    "PerCpuHashMap",
    "PermissionDeniedError",
    "Program",
    "RingBuffer",
    "SyscallError",
    "TcDirection",
    "TcMode",
    "TestRunResult",
    "TypeMismatchError",
    "UpdateFlags",
    "VerifierError",
    "XdpAction",
    "XdpMode",
    "load",
    "tool_object",
]
