"""Network interfaces of the current namespace: name ↔ index, the list, the default route's interface."""

from __future__ import annotations

import socket
from pathlib import Path

from ._uapi import RTF_REJECT, RTF_UP
from .errors import InterfaceNotFoundError

__all__ = ["default_route_interface", "ifindex", "ifname", "interfaces"]

# Module attributes so tests can point them at fixture files.
_PROC_ROUTE = Path("/proc/net/route")
_PROC_IPV6_ROUTE = Path("/proc/net/ipv6_route")


def interfaces() -> list[str]:
    """Names of every interface in this network namespace, sorted."""
    return sorted(name for _, name in socket.if_nameindex())


def ifindex(name: str) -> int:
    """The ifindex of `name`; raises InterfaceNotFoundError listing the interfaces that exist."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise InterfaceNotFoundError(name, interfaces()) from None


def ifname(index: int) -> str:
    """The name of interface `index`; raises InterfaceNotFoundError listing the interfaces that exist."""
    try:
        return socket.if_indextoname(index)
    except OSError:
        raise InterfaceNotFoundError(f"#{index}", interfaces()) from None


def default_route_interface() -> str | None:
    """The interface of the IPv4 default route, else of the IPv6 one, else None.

    Only routes that are up count; the kernel's unreachable ::/0 on lo is a reject route and is skipped.
    Among several defaults the lowest metric wins, as it does for the kernel.
    """
    return _ipv4_default() or _ipv6_default()


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:  # no IPv6 in this kernel or namespace
        return []


def _usable(flags: int) -> bool:
    return bool(flags & RTF_UP) and not flags & RTF_REJECT


def _ipv4_default() -> str | None:
    candidates: list[tuple[int, str]] = []
    # Iface Destination Gateway Flags RefCnt Use Metric Mask ...: addresses and flags hex, metric decimal
    for fields in (line.split() for line in _read_lines(_PROC_ROUTE)[1:]):
        is_default = len(fields) >= 8 and int(fields[1], 16) == 0 and int(fields[7], 16) == 0
        if is_default and _usable(int(fields[3], 16)):
            candidates.append((int(fields[6]), fields[0]))
    return min(candidates)[1] if candidates else None


def _ipv6_default() -> str | None:
    candidates: list[tuple[int, str]] = []
    # dest dest_plen src src_plen next_hop metric refcnt use flags iface: all hex
    for fields in (line.split() for line in _read_lines(_PROC_IPV6_ROUTE)):
        is_default = len(fields) >= 10 and int(fields[0], 16) == 0 and int(fields[1], 16) == 0
        if is_default and _usable(int(fields[8], 16)):
            candidates.append((int(fields[5], 16), fields[9]))
    return min(candidates)[1] if candidates else None
