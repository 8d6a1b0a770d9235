"""bpfscope: eBPF for Python. The core API only; tools live in bpfscope.tools and never load here.

Names are imported on first use (PEP 562), so `bpfscope --version` starts without numpy."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .__about__ import __version__

_EXPORTS = {
    "errors": ["BpfscopeError", "InterfaceNotFoundError", "KernelRefusedError", "NotSupportedError",
               "PermissionDeniedError", "SyscallError", "TypeMismatchError", "VerifierError"],
    "globals": ["Globals"],
    "link": ["IterLink", "Link", "LinkGroup"],
    "maps": ["ArrayMap", "HashMap", "LpmTrieMap", "Map", "MapOfMaps", "MapTemplate", "MapType", "PerCpuArrayMap",
             "PerCpuHashMap", "ProgramArray", "UpdateFlags"],
    "object": ["Object", "ObjectSpec", "load", "tool_object"],
    "perfbuf": ["PerfBuffer"],
    "program": ["AttachType", "CgroupIterOrder", "HardwareEvent", "NetfilterFamily", "NetfilterHook", "Program",
                "SoftwareEvent", "TcDirection", "TcMode", "TestRunResult", "XdpAction", "XdpMode"],
    "ringbuf": ["RingBuffer"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = ["__version__", *sorted(_MODULE_OF)]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'bpfscope' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


if TYPE_CHECKING:
    from .errors import (
        BpfscopeError,
        InterfaceNotFoundError,
        KernelRefusedError,
        NotSupportedError,
        PermissionDeniedError,
        SyscallError,
        TypeMismatchError,
        VerifierError,
    )
    from .globals import Globals
    from .link import IterLink, Link, LinkGroup
    from .maps import (
        ArrayMap,
        HashMap,
        LpmTrieMap,
        Map,
        MapOfMaps,
        MapTemplate,
        MapType,
        PerCpuArrayMap,
        PerCpuHashMap,
        ProgramArray,
        UpdateFlags,
    )
    from .object import Object, ObjectSpec, load, tool_object
    from .perfbuf import PerfBuffer
    from .program import (
        AttachType,
        CgroupIterOrder,
        HardwareEvent,
        NetfilterFamily,
        NetfilterHook,
        Program,
        SoftwareEvent,
        TcDirection,
        TcMode,
        TestRunResult,
        XdpAction,
        XdpMode,
    )
    from .ringbuf import RingBuffer
