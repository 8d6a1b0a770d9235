"""VethPair and the pytest plugin against the real kernel: namespaces, veths, frames the kernel accepts."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import bpfscope
from bpfscope.errors import InterfaceNotFoundError
from bpfscope.netdev import default_route_interface
from bpfscope.testing import VethPair, packets, send_frames
from bpfscope.testing.plugin import skip_unless_root

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
PORT = 5555

# Prints "ready" once bound, then the first datagram as "<hex payload> <source ip> <source port>".
RECEIVER = textwrap.dedent(
    """
    import socket, sys
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", int(sys.argv[1])))
    sock.settimeout(3)
    print("ready", flush=True)
    data, (ip, port) = sock.recvfrom(65535)
    print(data.hex(), ip, port, flush=True)
    """
)


def ip_netns_list() -> str:
    return subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, text=True).stdout


@contextlib.contextmanager
def udp_receiver(pair: VethPair) -> Iterator[Callable[[], tuple[bytes, str, int]]]:
    """A UDP receiver on PORT inside the namespace; calling the yielded function waits for its datagram."""
    process = pair.popen([sys.executable, "-c", RECEIVER, str(PORT)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"

    def received() -> tuple[bytes, str, int]:
        out, _ = process.communicate(timeout=4)
        assert process.returncode == 0, "nothing arrived within 3 s"
        data, ip, port = out.split()
        return bytes.fromhex(data), ip, int(port)

    try:
        yield received
    finally:
        process.kill()
        process.communicate()


@contextlib.contextmanager
def capture(iface: str) -> Iterator[Callable[[Callable[[bytes], bool]], bytes]]:
    """Frames arriving at `iface`; the yielded function returns the first one matching a predicate."""
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as sock:
        sock.bind((iface, ETH_P_ALL))

        def first(match: Callable[[bytes], bool]) -> bytes:
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                sock.settimeout(max(deadline - time.monotonic(), 0.01))
                frame, address = sock.recvfrom(65535)
                if address[2] != PACKET_OUTGOING and match(frame):
                    return frame
            raise AssertionError(f"no matching frame on {iface}")

        yield first


def from_peer(pair: VethPair, proto: int) -> Callable[[bytes], bool]:
    peer_ip = socket.inet_aton(pair.peer_ip)
    return lambda frame: frame[12:14] == b"\x08\x00" and frame[23] == proto and frame[26:30] == peer_ip


def test_lifecycle() -> None:
    skip_unless_root()
    pair = VethPair()
    try:
        assert pair.ns.startswith("bpfscope-") and pair.ns in ip_netns_list().split()
        assert len(pair.host) <= 15 and len(pair.peer) <= 15
        assert Path(f"/sys/class/net/{pair.host}/address").read_text().strip() == pair.host_mac
        assert Path(f"/proc/sys/net/ipv6/conf/{pair.host}/disable_ipv6").read_text().strip() == "1"
        files = [
            f"/sys/class/net/{pair.peer}/address",
            "/proc/sys/net/ipv6/conf/lo/disable_ipv6",
            f"/proc/sys/net/ipv6/conf/{pair.peer}/disable_ipv6",
        ]
        in_ns = pair.exec(["cat", *files], check=True, capture_output=True, text=True).stdout.split()
        assert in_ns == [pair.peer_mac, "1", "1"]
        host_net = pair.host_ip.rsplit(".", 1)[0]
        assert pair.host_ip == f"{host_net}.1" and pair.peer_ip == f"{host_net}.2"
        assert host_net.startswith("10.199.")
        sleeper = pair.popen(["sleep", "30"])
    finally:
        pair.close()
    assert sleeper.poll() is not None  # close() killed what popen started
    assert pair.ns not in ip_netns_list().split()
    assert not Path(f"/sys/class/net/{pair.host}").exists()
    pair.close()


def test_context_manager_closes_on_error() -> None:
    skip_unless_root()
    with pytest.raises(KeyError), VethPair() as pair:
        raise KeyError
    assert pair.ns not in ip_netns_list().split()


def test_pairs_do_not_clash() -> None:
    skip_unless_root()
    with VethPair() as first, VethPair() as second:
        assert first.ns != second.ns and first.host != second.host
        assert first.host_ip != second.host_ip


def test_udp_socket_host_to_peer(veth_pair: VethPair) -> None:
    with udp_receiver(veth_pair) as received, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"hello", (veth_pair.peer_ip, PORT))
        assert received()[:2] == (b"hello", veth_pair.host_ip)


def test_crafted_udp_frame_arrives(veth_pair: VethPair) -> None:
    frame = packets.udp_frame(
        src_mac=veth_pair.host_mac,
        dst_mac=veth_pair.peer_mac,
        src_ip=veth_pair.host_ip,
        dst_ip=veth_pair.peer_ip,
        sport=4321,
        dport=PORT,
        payload=b"crafted",
    )
    with udp_receiver(veth_pair) as received:
        assert send_frames([frame], veth_pair.host) == 1
        assert received() == (b"crafted", veth_pair.host_ip, 4321)


def test_kernel_drops_bad_checksums(veth_pair: VethPair) -> None:
    # Without this, a datagram arriving would not prove that the builders' checksums are right.
    def frame(payload: bytes) -> bytearray:
        return bytearray(
            packets.udp_frame(
                src_mac=veth_pair.host_mac,
                dst_mac=veth_pair.peer_mac,
                src_ip=veth_pair.host_ip,
                dst_ip=veth_pair.peer_ip,
                sport=4321,
                dport=PORT,
                payload=payload,
            )
        )

    bad_ip, bad_udp = frame(b"bad ip"), frame(b"bad udp")
    bad_ip[14 + 10] ^= 0xFF
    bad_udp[14 + 20 + 6] ^= 0xFF
    with udp_receiver(veth_pair) as received:
        send_frames([bytes(bad_ip), bytes(bad_udp), bytes(frame(b"good"))], veth_pair.host)
        assert received()[0] == b"good"


def test_crafted_tcp_syn_gets_reset(veth_pair: VethPair) -> None:
    syn = packets.tcp_frame(
        src_mac=veth_pair.host_mac,
        dst_mac=veth_pair.peer_mac,
        src_ip=veth_pair.host_ip,
        dst_ip=veth_pair.peer_ip,
        sport=40000,
        dport=PORT,  # nothing listens: the peer answers RST|ACK, but only to a SYN with a valid checksum
        seq=1000,
    )
    with capture(veth_pair.host) as first:
        send_frames([syn], veth_pair.host)
        reply = first(from_peer(veth_pair, 6))
    assert reply[34 + 13] == packets.TcpFlags.RST | packets.TcpFlags.ACK
    assert int.from_bytes(reply[34 + 8 : 34 + 12], "big") == 1001


def test_crafted_icmp_echo_gets_reply(veth_pair: VethPair) -> None:
    request = packets.icmp_frame(
        src_mac=veth_pair.host_mac,
        dst_mac=veth_pair.peer_mac,
        src_ip=veth_pair.host_ip,
        dst_ip=veth_pair.peer_ip,
        ident=0x4242,
        seq=7,
        payload=b"ping",
    )
    with capture(veth_pair.host) as first:
        send_frames([request], veth_pair.host)
        reply = first(from_peer(veth_pair, 1))
    assert reply[34] == 0 and reply[38:42] == b"\x42\x42\x00\x07" and reply[42:] == b"ping"


def test_crafted_arp_request_gets_reply(veth_pair: VethPair) -> None:
    request = packets.arp_frame(
        src_mac=veth_pair.host_mac, src_ip=veth_pair.host_ip, target_ip=veth_pair.peer_ip
    )
    with capture(veth_pair.host) as first:
        send_frames([request], veth_pair.host)
        reply = first(lambda frame: frame[12:14] == b"\x08\x06" and frame[20:22] == b"\x00\x02")
    assert reply[22:28] == bytes.fromhex(veth_pair.peer_mac.replace(":", ""))
    assert reply[28:32] == socket.inet_aton(veth_pair.peer_ip)


def test_counts_are_exact(veth_pair: VethPair) -> None:
    def peer_rx() -> int:
        path = f"/sys/class/net/{veth_pair.peer}/statistics/rx_packets"
        return int(veth_pair.exec(["cat", path], check=True, capture_output=True, text=True).stdout)

    before = peer_rx()
    assert veth_pair.send_udp(count=100) == 100
    assert peer_rx() - before == 100


def test_send_frames_refuses_unknown_and_default_route_interface() -> None:
    with pytest.raises(InterfaceNotFoundError, match="lo"):
        send_frames([b""], "nosuchif0")
    default = default_route_interface()
    if default is not None:
        with pytest.raises(ValueError, match="default route"):
            send_frames([b""], default)


def run_inner_pytest(tmp_path: Path, test_code: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(test_code))
    package_root = Path(bpfscope.__path__[0]).parent
    env = {**os.environ, "PYTHONPATH": f"{package_root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    # Only the -p below: no plugin of the environment (the inner test has no conftest of ours).
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "bpfscope.testing.plugin", "-p", "no:cacheprovider"],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_plugin_fails_a_test_that_leaks_a_bpf_fd(tmp_path: Path) -> None:
    skip_unless_root()
    if os.uname().machine != "x86_64":
        pytest.skip("the inner test calls bpf() by its x86_64 syscall number")
    result = run_inner_pytest(
        tmp_path,
        """
        import ctypes, struct
        libc = ctypes.CDLL(None, use_errno=True)
        kept = []

        def test_leaks():
            attr = ctypes.create_string_buffer(struct.pack("IIII", 2, 4, 4, 1), 72)  # array, 1 entry
            fd = libc.syscall(321, 0, attr, 72)  # BPF_MAP_CREATE
            assert fd >= 0
            kept.append(fd)
        """,
    )
    assert result.returncode == 1, result.stdout
    assert "test leaked 1 BPF fd(s)" in result.stdout and "anon_inode:bpf-map" in result.stdout


def test_plugin_fails_the_session_on_a_leftover_namespace(tmp_path: Path) -> None:
    skip_unless_root()
    names = tmp_path / "names"
    try:
        result = run_inner_pytest(
            tmp_path,
            f"""
            from pathlib import Path
            from bpfscope.testing import VethPair

            def test_forgets_to_close():
                pair = VethPair()
                Path({str(names)!r}).write_text(pair.ns + " " + pair.host)
            """,
        )
        ns, host = names.read_text().split()
        assert result.returncode == 1, result.stdout
        assert f"this run left netns {ns}, interface {host}" in result.stdout
    finally:
        if names.exists():
            ns, host = names.read_text().split()
            subprocess.run(["ip", "link", "delete", host], check=False, capture_output=True)
            subprocess.run(["ip", "netns", "delete", ns], check=False, capture_output=True)


def test_bpffs_dir_is_on_bpffs_and_removed_with_pins(tmp_path: Path) -> None:
    skip_unless_root()
    result = run_inner_pytest(
        tmp_path,
        f"""
        import subprocess
        from pathlib import Path

        def test_pins(bpffs_dir):
            mounts = [line.split() for line in open("/proc/mounts")]
            assert any(m[1] == "/sys/fs/bpf" and m[2] == "bpf" for m in mounts)
            assert list(bpffs_dir.iterdir()) == []
            pin = bpffs_dir / "counts"
            subprocess.run(["bpftool", "map", "create", str(pin), "type", "array", "key", "4", "value", "4",
                            "entries", "1", "name", "counts"], check=True)
            assert pin.exists()
            Path({str(tmp_path / "dir")!r}).write_text(str(bpffs_dir))
        """,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not Path((tmp_path / "dir").read_text()).exists()
