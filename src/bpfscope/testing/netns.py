"""A fresh network namespace joined to the root namespace by a veth pair, and raw frame injection."""

from __future__ import annotations

import errno
import json
import os
import random
import secrets
import socket
import subprocess
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..netdev import default_route_interface, ifindex
from .packets import udp_frame

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["NETNS_PREFIX", "VethPair", "foreign_namespaces", "namespaces", "own_leftovers", "send_frames", "tc_filters"]

NETNS_PREFIX = "bpfscope-"

# ip-netns(8): a named namespace is a bind mount here.
_NETNS_RUN_DIR = "/var/run/netns"

# Namespace → host interface of every pair this process made, so the end-of-session check can tell its
# own leftovers from pairs of another test run going on at the same time.
_created: dict[str, str] = {}


class VethPair:
    """A new network namespace `ns` and a veth pair: `host` stays in the root namespace, `peer` is in `ns`.

    Addresses are 10.199.X.1/30 on `host` and 10.199.X.2/30 on `peer`, X random and unused here. IPv6
    is off on both ends and on the namespace's lo, and each end has a permanent neighbour entry for the
    other, so no neighbour discovery, MLD or ARP crosses the link: only what a test sends does, and
    packet counts are exact. `close()` (also on leaving a `with`) kills what `popen` started and deletes
    the link and the namespace; calling it again does nothing.
    """

    ns: str
    host: str
    peer: str
    host_ip: str
    peer_ip: str
    host_mac: str
    peer_mac: str

    def __init__(self) -> None:
        token = secrets.token_hex(4)
        self.ns = NETNS_PREFIX + token
        self.host = f"bsh-{token}"  # IFNAMSIZ: at most 15 characters
        self.peer = f"bsp-{token}"
        subnet = _free_subnet()
        self.host_ip = f"10.199.{subnet}.1"
        self.peer_ip = f"10.199.{subnet}.2"
        self.host_mac = _random_mac()
        self.peer_mac = _random_mac()
        self._processes: list[subprocess.Popen[Any]] = []
        self._closed = False
        _ip("netns", "add", self.ns)
        _created[self.ns] = self.host
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        _ip(
            *("link", "add", self.host, "address", self.host_mac, "type", "veth"),
            *("peer", "name", self.peer, "address", self.peer_mac, "netns", self.ns),
        )
        # Both ends are still down, so not a single router solicitation or MLD report has left yet.
        with open(f"/proc/sys/net/ipv6/conf/{self.host}/disable_ipv6", "w") as knob:
            knob.write("1")
        knobs = [f"net.ipv6.conf.{name}.disable_ipv6=1" for name in ("all", "default", "lo", self.peer)]
        _check(self.exec(["sysctl", "-q", "-w", *knobs], capture_output=True, text=True))
        _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host)
        _ip("link", "set", self.host, "up")
        peer_side = [
            f"addr add {self.peer_ip}/30 dev {self.peer}",
            f"link set {self.peer} up",
            "link set lo up",
            f"neigh replace {self.host_ip} lladdr {self.host_mac} dev {self.peer} nud permanent",
        ]
        _ip("-n", self.ns, "-batch", "-", input="\n".join(peer_side))
        _ip("neigh", "replace", self.peer_ip, "lladdr", self.peer_mac, "dev", self.host, "nud", "permanent")
        self._wait_until_up()

    def _wait_until_up(self, timeout: float = 2.0) -> None:
        # Carrier-on reaches the qdisc through the linkwatch workqueue; until then the device has the
        # noop qdisc, which drops everything sent.
        deadline = time.monotonic() + timeout
        while True:
            states = [
                _ip("-o", "link", "show", "dev", self.host),
                _ip("-n", self.ns, "-o", "link", "show", "dev", self.peer),
            ]
            if all("state UP" in line and "qdisc noop" not in line for line in states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"veth pair {self.host}/{self.peer} not up after {timeout} s: {states}")
            time.sleep(0.005)

    def exec(
        self, argv: Sequence[str], *, check: bool = False, **kwargs: Any
    ) -> subprocess.CompletedProcess[Any]:
        """subprocess.run(argv, check=check, **kwargs) inside the namespace (`ip netns exec`)."""
        return subprocess.run(["ip", "netns", "exec", self.ns, *argv], check=check, **kwargs)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """subprocess.Popen(argv, **kwargs) inside the namespace; `close()` kills it if still running."""
        # `ip netns exec` execs argv, so the pid is the command's own.
        process: subprocess.Popen[Any] = subprocess.Popen(["ip", "netns", "exec", self.ns, *argv], **kwargs)
        self._processes.append(process)
        return process

    def send_udp(self, *, count: int = 1, sport: int = 40000, dport: int = 9, payload: bytes = b"") -> int:
        """Send `count` identical UDP datagrams from host to peer as raw frames on `host`; returns count.

        Nothing listens on the default port 9 (discard), so the peer answers with ICMP port unreachable,
        rate-limited by net.ipv4.icmp_ratelimit.
        """
        frame = udp_frame(
            src_mac=self.host_mac,
            dst_mac=self.peer_mac,
            src_ip=self.host_ip,
            dst_ip=self.peer_ip,
            sport=sport,
            dport=dport,
            payload=payload,
        )
        return send_frames([frame] * count, self.host)

    def close(self) -> None:
        """Kill what `popen` started, delete the veth pair and the namespace. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for process in self._processes:
            if process.poll() is None:
                process.kill()
            process.wait()
        # Deleting the link removes both ends at once; left to the namespace, the peer would go only when
        # the kernel's cleanup_net work runs, after the last process in it has exited.
        subprocess.run(["ip", "link", "delete", self.host], check=False, capture_output=True)
        if self.ns in namespaces():
            _ip("netns", "delete", self.ns)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"VethPair(ns={self.ns!r}, host={self.host!r} {self.host_ip} {self.host_mac}, "
            f"peer={self.peer!r} {self.peer_ip} {self.peer_mac})"
        )


def send_frames(frames: Sequence[bytes], iface: str, *, timeout: float = 5.0) -> int:
    """Transmit raw Ethernet frames on `iface` of this process's (root) namespace; returns how many.

    Uses an AF_PACKET/SOCK_RAW socket with protocol 0, so it never receives. Bounded: a frame the device
    refuses with ENOBUFS is retried until `timeout` seconds have passed in all, then the error is raised.
    The interface of the default route is refused: tests send only on links they made themselves.
    """
    if iface == default_route_interface():
        raise ValueError(f"refusing to inject frames on {iface!r}, the interface of the default route")
    ifindex(iface)  # InterfaceNotFoundError names the interfaces that do exist
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as sock:
        sock.settimeout(timeout)
        sock.bind((iface, 0))
        for frame in frames:
            while True:
                try:
                    sock.send(frame)
                    break
                except OSError as err:
                    if err.errno != errno.ENOBUFS or time.monotonic() > deadline:
                        raise
                    time.sleep(0.001)
    return len(frames)


def tc_filters(iface: str) -> set[tuple[str, int]]:
    """(direction, program id) of each cls_bpf filter on `iface`, as bpftool lists them."""
    out = subprocess.run(["bpftool", "-j", "net", "show", "dev", iface], capture_output=True, text=True,
                         check=True).stdout
    return {(f["kind"].removeprefix("clsact/"), f["id"]) for entry in json.loads(out or "[]") for f in entry["tc"]}


def namespaces() -> list[str]:
    """Names of the named network namespaces (`ip netns list`), sorted."""
    try:
        return sorted(os.listdir(_NETNS_RUN_DIR))
    except FileNotFoundError:
        return []


def own_leftovers() -> list[str]:
    """Namespaces and host interfaces made by a VethPair of this process that still exist."""
    existing = set(namespaces())
    left = [f"netns {ns}" for ns in _created if ns in existing]
    left += [f"interface {host}" for host in _created.values() if os.path.exists(f"/sys/class/net/{host}")]
    return left


def foreign_namespaces() -> list[str]:
    """Namespaces named like a VethPair's but not made by this process: another run's or a crashed one's."""
    return [ns for ns in namespaces() if ns.startswith(NETNS_PREFIX) and ns not in _created]


def _free_subnet() -> int:
    used = _ip("-4", "-o", "addr", "show")
    free = [x for x in range(256) if f" 10.199.{x}." not in used]
    if not free:
        raise RuntimeError("every 10.199.X.0/30 subnet is in use")
    return random.choice(free)


def _random_mac() -> str:
    # 0x02: locally administered, unicast
    return ":".join(f"{b:02x}" for b in b"\x02" + secrets.token_bytes(5))


def _ip(*args: str, input: str | None = None) -> str:
    return _check(subprocess.run(["ip", *args], check=False, input=input, capture_output=True, text=True))


def _check(result: subprocess.CompletedProcess[str]) -> str:
    if result.returncode != 0:
        command = " ".join(result.args)
        raise RuntimeError(f"{command!r} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout
