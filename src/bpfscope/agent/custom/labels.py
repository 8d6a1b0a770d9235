"""Label values of a custom program's metrics, decoded from the raw key fields of a map's batch: each
distinct raw value once, then remembered (the package docstring lists the decoders)."""

from __future__ import annotations

import errno
import ipaddress
from typing import Any, Callable, ClassVar, Optional

import numpy as np

from ...errors import BpfscopeError
from ..containers import ContainerResolver
from .spec import LabelSpec

__all__ = ["Converter", "KALLSYMS", "Kallsyms", "Label", "converter"]

KALLSYMS = "/proc/kallsyms"
_CACHE_LIMIT = 100_000  # decoded label values remembered per label; past it the cache starts afresh


class Kallsyms:
    """Kernel symbols by address, from /proc/kallsyms. The kernel shows the addresses only to a process with
    CAP_SYSLOG (and kernel.kptr_restrict below 2), zeros to any other: then this raises one line naming
    CAP_SYSLOG, rather than leave every address as a label of its own."""

    # The last read that saw addresses, per path: the agent gives up CAP_SYSLOG once it has started.
    _readable: ClassVar[dict[str, Kallsyms]] = {}

    def __init__(self, path: str = KALLSYMS) -> None:
        addresses: list[int] = []
        names: list[str] = []
        with open(path) as f:
            for line in f:
                parts = line.split(maxsplit=3)
                if len(parts) >= 3 and int(parts[0], 16):  # all zeros: addresses hidden (kptr_restrict)
                    addresses.append(int(parts[0], 16))
                    names.append(parts[2])
        if not addresses:
            raise BpfscopeError(errno.EPERM, f"ksym labels: {path} shows every kernel address as 0 to this "
                                "process: it needs CAP_SYSLOG (and kernel.kptr_restrict below 2)")
        order = np.argsort(np.array(addresses, dtype=np.uint64), kind="stable")
        ordered = np.array(addresses, dtype=np.uint64)[order]
        self._addresses, first = np.unique(ordered, return_index=True)  # an alias: the name listed first
        self._names = [names[i] for i in order[first].tolist()]

    @classmethod
    def read(cls, path: str = KALLSYMS) -> Kallsyms:
        """The symbols now; where the addresses are hidden (a reload, once the agent has given up
        CAP_SYSLOG), those of the last read in this process that saw them, if any."""
        try:
            symbols = cls(path)
        except BpfscopeError:
            if path not in cls._readable:
                raise
            return cls._readable[path]
        cls._readable[path] = symbols
        return symbols

    def names(self, raw: np.ndarray[Any, Any]) -> list[str]:
        addresses = np.ascontiguousarray(raw).view(np.uint64)
        index = np.searchsorted(self._addresses, addresses, side="right") - 1
        return [self._names[i] if i >= 0 else f"{a:#x}" for i, a in zip(index.tolist(), addresses.tolist())]


def _scalars(column: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """A key column as one sortable scalar per row: integers and char arrays as they are, anything
    else (a __u8[16], a struct) as raw bytes."""
    if column.ndim == 1 and column.dtype.kind in "biuS":
        return column
    dense = np.ascontiguousarray(column)
    size = dense.dtype.itemsize * int(np.prod(dense.shape[1:], dtype=np.int64))
    return dense.view(np.dtype(f"V{size}")).reshape(len(dense))


def _octets(raw: np.ndarray[Any, Any], width: int) -> list[list[int]]:
    """Each value's bytes as they lie in memory: network order for an address."""
    octets: list[list[int]] = np.ascontiguousarray(raw).view(np.uint8).reshape(-1, width).tolist()
    return octets


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")


def _ipv6(octets: list[int]) -> str:
    address = ipaddress.IPv6Address(bytes(octets))
    return str(address.ipv4_mapped or address)


Converter = Callable[[np.ndarray[Any, Any]], list[str]]


class Label:
    """One label of one metric: each distinct raw value is decoded once and remembered."""

    def __init__(self, spec: LabelSpec, convert: Converter, *, remember_empty: bool = True) -> None:
        self.spec = spec
        self._convert = convert
        self._remember_empty = remember_empty  # a cgroup not seen yet is "" now, its path later
        self._cache: dict[Any, str] = {}

    def read(self, keys: np.ndarray[Any, Any]) -> tuple[list[str], np.ndarray[Any, Any]]:
        """The distinct label values, and for each row the index of its value."""
        column = keys if self.spec.field is None else keys[self.spec.field]
        uniques, inverse = np.unique(_scalars(column), return_inverse=True)
        raw = uniques.tolist()
        missing = [i for i, value in enumerate(raw) if value not in self._cache]
        decoded = dict(zip((raw[i] for i in missing), self._convert(uniques[missing]))) if missing else {}
        texts = [decoded[value] if value in decoded else self._cache[value] for value in raw]
        if len(self._cache) + len(decoded) > _CACHE_LIMIT:
            self._cache.clear()
        self._cache.update((k, v) for k, v in decoded.items() if v or self._remember_empty)
        # Distinct raw values may decode alike (bytes after a NUL, two gone cgroups): one index per text.
        distinct = list(dict.fromkeys(texts))
        position = {text: i for i, text in enumerate(distinct)}
        remap = np.array([position[text] for text in texts], dtype=np.intp)
        return distinct, remap[inverse.reshape(-1)]


def converter(label: LabelSpec, kallsyms: Optional[Kallsyms], resolver: Optional[ContainerResolver]) -> Converter:
    """The decoder `label` asks for: raw values of its field in, their texts out."""
    decoder = label.decoder
    if decoder == "int":
        return lambda raw: [str(v) for v in raw.tolist()]
    if decoder in ("string", "comm"):
        return lambda raw: [_text(v) for v in raw.tolist()]
    if decoder == "ipv4":
        return lambda raw: [".".join(map(str, octets)) for octets in _octets(raw, 4)]
    if decoder == "ipv6":
        return lambda raw: [_ipv6(octets) for octets in _octets(raw, 16)]
    if decoder == "cgroup":
        assert resolver is not None
        return lambda raw: [resolver.path(v) for v in raw.tolist()]
    if decoder == "ksym":
        assert kallsyms is not None
        return kallsyms.names
    names = dict(label.enumerators)
    return lambda raw: [names.get(v, str(v)) for v in raw.tolist()]
