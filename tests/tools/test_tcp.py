"""bpfscope tcp end to end, between two network namespaces the test makes (a VethPair's namespace, the
server's, and a second one the pair's other end is moved into, the client's), with the tool filtered to
those two so that other traffic on the machine does not count. References the kernel keeps: the ports
the client's sockets got, the bytes each side sent, TcpRetransSegs and OutRsts of each namespace's
/proc/net/snmp, and the packet counter of the nftables rule that dropped segments."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import textwrap
import time
from typing import Any, Iterator

import pytest
from loaded import held_by, still_loaded

from bpfscope.testing import VethPair
from bpfscope.tools.tcp import TcpTracer

BPFSCOPE = [sys.executable, "-m", "bpfscope.cli.main"]
PORT = 7070
CLOSED_PORT = 7071

# Server: accepts argv[1] connections on PORT, reads each to EOF, answers with argv[2+i] bytes, closes.
SERVER = textwrap.dedent("""
    import json, socket, sys
    count, replies = int(sys.argv[1]), [int(n) for n in sys.argv[2:]]
    srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", %d)); srv.listen(64)
    print("ready", flush=True)
    got = []
    for i in range(count):
        conn, peer = srv.accept()
        n = 0
        while chunk := conn.recv(65536):
            n += len(chunk)
        conn.sendall(b"r" * replies[i]); conn.close()
        got.append([peer[1], n])
    print(json.dumps(got), flush=True)
""" % PORT)

# Client: for each size in argv[2:], connects to argv[1], sends that many bytes in 1000-byte writes,
# shuts down its side, reads the answer to EOF; prints [local port, bytes received] per connection.
CLIENT = textwrap.dedent("""
    import json, socket, sys
    done = []
    for size in (int(n) for n in sys.argv[2:]):
        c = socket.create_connection((sys.argv[1], %d), timeout=20)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for at in range(0, size, 1000):
            c.sendall(b"s" * min(1000, size - at))
        c.shutdown(socket.SHUT_WR)
        n = 0
        while chunk := c.recv(65536):
            n += len(chunk)
        done.append([c.getsockname()[1], n]); c.close()
    print(json.dumps(done), flush=True)
""" % PORT)

# Connects argv[2] times to port argv[1] where nothing listens; each ends refused.
REFUSED = textwrap.dedent("""
    import socket, sys
    for _ in range(int(sys.argv[3])):
        s = socket.socket()
        try:
            s.connect((sys.argv[1], int(sys.argv[2])))
        except ConnectionRefusedError:
            pass
        s.close()
""")


class Namespaces:
    """The server in `pair.ns` at `pair.peer_ip`; the client in `client_ns` at `pair.host_ip`."""

    def __init__(self) -> None:
        self.pair = VethPair()
        self.client_ns = f"bstcp-{secrets.token_hex(4)}"
        try:
            p = self.pair
            ip("netns", "add", self.client_ns)
            ip("link", "set", p.host, "netns", self.client_ns)
            batch = [f"addr add {p.host_ip}/30 dev {p.host}", f"link set {p.host} up", "link set lo up",
                     f"neigh replace {p.peer_ip} lladdr {p.peer_mac} dev {p.host} nud permanent"]
            subprocess.run(["ip", "-n", self.client_ns, "-batch", "-"], input="\n".join(batch), text=True,
                           check=True, capture_output=True)
            self.client(["true"], check=True)
        except BaseException:
            self.close()
            raise

    @property
    def paths(self) -> tuple[str, str]:
        return f"/var/run/netns/{self.pair.ns}", f"/var/run/netns/{self.client_ns}"

    def server(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.pair.ns, *argv], text=True, capture_output=True,
                              timeout=60, **kwargs)

    def client(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.client_ns, *argv], text=True, capture_output=True,
                              timeout=60, **kwargs)

    def exchange(self, sizes: list[int], replies: list[int]) -> tuple[list[list[int]], list[list[int]]]:
        """Runs the server and the client: ([client port, bytes received] by the server, by the client)."""
        server = self.pair.popen([sys.executable, "-c", SERVER, str(len(sizes)), *map(str, replies)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready", server.stderr.read() if server.stderr else ""
        client = self.client([sys.executable, "-c", CLIENT, self.pair.peer_ip, *map(str, sizes)], check=True)
        out, err = server.communicate(timeout=30)
        assert server.returncode == 0, err
        return json.loads(out), json.loads(client.stdout)

    def snmp(self, ns: str) -> dict[str, int]:
        """The Tcp line of /proc/net/snmp as the namespace `ns` sees it (each namespace has its own)."""
        lines = [line.split() for line in subprocess.run(
            ["ip", "netns", "exec", ns, "cat", "/proc/net/snmp"], text=True, capture_output=True,
            check=True).stdout.splitlines() if line.startswith("Tcp:")]
        return {name: int(value) for name, value in zip(lines[0][1:], lines[1][1:])}

    def close(self) -> None:
        subprocess.run(["ip", "netns", "delete", self.client_ns], capture_output=True, check=False)
        self.pair.close()


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    world = Namespaces()
    yield world
    world.close()


def drain(tracer: TcpTracer, done: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Records from the tool until `done(records)` holds; bounded by `timeout`."""
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not done(records):
        assert time.monotonic() < deadline, f"not all events came in {timeout} s: {records}"
        records += tracer.records(tracer.poll(100))
    return records


def closes(n: int) -> Any:
    return lambda records: sum(r["event"] == "close" for r in records) >= n


def test_connections_ports_and_bytes(namespaces: Namespaces) -> None:
    sizes, replies = [1, 1000, 25_000, 100_000, 3_333], [7, 0, 4_096, 50_000, 123_456]
    with TcpTracer(netns=namespaces.paths) as tracer:
        by_server, by_client = namespaces.exchange(sizes, replies)
        records = drain(tracer, closes(2 * len(sizes)))
        counts = tracer.counts()
        stats = tracer.stats()
    ports = [port for port, _ in by_client]
    assert [port for port, _ in by_server] == ports
    assert [n for _, n in by_server] == sizes and [n for _, n in by_client] == replies
    pair = namespaces.pair
    connects = [r for r in records if r["event"] == "connect"]
    accepts = [r for r in records if r["event"] == "accept"]
    assert [(r["saddr"], r["sport"], r["daddr"], r["dport"]) for r in connects] == \
        [(pair.host_ip, port, pair.peer_ip, 7070) for port in ports]
    assert [(r["saddr"], r["sport"], r["daddr"], r["dport"]) for r in accepts] == \
        [(pair.peer_ip, 7070, pair.host_ip, port) for port in ports]
    assert all(r["handshake_us"] > 0 for r in connects + accepts)
    closed = {(r["side"], r["sport"] if r["side"] == "connect" else r["dport"]): r
              for r in records if r["event"] == "close"}
    for port, size, reply in zip(ports, sizes, replies):
        assert (closed["connect", port]["bytes_sent"], closed["connect", port]["bytes_received"]) == (size, reply)
        assert (closed["accept", port]["bytes_sent"], closed["accept", port]["bytes_received"]) == (reply, size)
    assert (counts.opened, counts.accepted, counts.closed, counts.failed) == (5, 5, 10, 0)
    assert sum(sum(slots) for slots in counts.rtt.values()) == 10
    assert set(counts.rtt) == {pair.host_ip, pair.peer_ip}
    assert (stats.lost, stats.missed) == (0, 0)


def test_retransmits_and_drops_match_the_kernel(namespaces: Namespaces) -> None:
    """Segments to the server are dropped by an nftables rule in its namespace until a byte quota is used
    up; the client retransmits them. Then connections to a closed port: each SYN dropped with NO_SOCKET."""
    pair, refused = namespaces.pair, 4
    rules = textwrap.dedent(f"""
        table inet bpfscope_tcp_test {{
            counter dropped {{}}
            chain input {{
                type filter hook input priority 0;
                tcp dport {PORT} meta length > 500 quota until 6000 bytes counter name dropped drop
            }}
        }}
    """)
    namespaces.server(["nft", "-f", "-"], input=rules, check=True)
    before = {ns: namespaces.snmp(ns) for ns in (pair.ns, namespaces.client_ns)}
    with TcpTracer(netns=namespaces.paths) as tracer:
        namespaces.exchange([20_000, 20_000], [10, 10])
        namespaces.client([sys.executable, "-c", REFUSED, pair.peer_ip, str(CLOSED_PORT), str(refused)], check=True)
        records = drain(tracer, lambda rs: closes(4)(rs) and sum(
            r["event"] == "drop" and r["reason"] == "NO_SOCKET" for r in rs) >= refused)
        records += tracer.records(tracer.poll(200))
        counts = tracer.counts()
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for m in tracer.metrics() for s in m.samples}
    after = {ns: namespaces.snmp(ns) for ns in before}
    retrans = sum(after[ns]["RetransSegs"] - before[ns]["RetransSegs"] for ns in before)
    out_rsts = after[pair.ns]["OutRsts"] - before[pair.ns]["OutRsts"]
    counter = json.loads(namespaces.server(["nft", "-j", "list", "counter", "inet", "bpfscope_tcp_test", "dropped"],
                                           check=True).stdout)
    dropped = next(item["counter"]["packets"] for item in counter["nftables"] if "counter" in item)
    assert dropped > 0 and retrans > 0
    assert counts.retransmits == retrans
    assert sum(r["segments"] for r in records if r["event"] == "retransmit") == retrans
    assert all(r["state"] == "ESTABLISHED" and r["saddr"] == pair.host_ip and r["dport"] == PORT
               for r in records if r["event"] == "retransmit")
    assert counts.drops.get("NETFILTER_DROP") == dropped
    assert counts.drops.get("NO_SOCKET") == refused == out_rsts
    no_socket = [r for r in records if r["event"] == "drop" and r["reason"] == "NO_SOCKET"]
    assert all((r["daddr"], r["dport"]) == (pair.peer_ip, CLOSED_PORT) for r in no_socket)
    assert counts.failed == refused
    # the agent's families: bounded labels (side, reason), the same counts
    assert samples["bpfscope_tcp_connections_total", (("side", "accept"),)] == 2
    assert samples["bpfscope_tcp_retransmitted_segments_total", ()] == retrans
    assert samples["bpfscope_tcp_drops_total", (("reason", "NO_SOCKET"),)] == refused
    assert samples["bpfscope_tcp_rtt_seconds_count", ()] == 4


def test_filters_keep_out_other_namespaces(namespaces: Namespaces) -> None:
    """The tool filtered to the client's namespace sees its connects, not the server's accepts."""
    with TcpTracer(netns=(namespaces.paths[1],)) as tracer:
        namespaces.exchange([100], [100])
        records = drain(tracer, closes(1))
        records += tracer.records(tracer.poll(200))
        counts = tracer.counts()
    assert {r["event"] for r in records} <= {"connect", "close", "drop"}
    assert (counts.opened, counts.accepted, counts.closed) == (1, 0, 1)


def test_cli_json_and_kill(namespaces: Namespaces) -> None:
    proc = subprocess.Popen([*BPFSCOPE, "tcp", "--json", "--events", "connect,close", "--netns", namespaces.paths[0],
                             "--netns", namespaces.paths[1]], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert first.startswith("bpfscope tcp: tracing connect,close"), first + proc.stderr.read()
        programs = held_by(proc.pid)
        assert programs
        namespaces.exchange([10, 20], [30, 40])
        time.sleep(0.5)
        proc.terminate()
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        lines = [json.loads(line) for line in out.splitlines()]
        events, final = lines[:-1], lines[-1]
        assert [e["event"] for e in events].count("connect") == 2
        assert sorted(e["bytes_sent"] for e in events if e["event"] == "close") == [10, 20, 30, 40]
        assert final["final"] and final["by_event"] == {"connect": 2, "close": 4}
        assert (final["lost"], final["missed"], final["opened"], final["accepted"]) == (0, 0, 2, 2)
        assert not still_loaded(programs)
        killed = subprocess.Popen([*BPFSCOPE, "tcp", "--rtt"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True)
        assert killed.stderr is not None
        assert killed.stderr.readline().startswith("bpfscope tcp --rtt")
        programs = held_by(killed.pid)
        killed.kill()
        killed.wait(timeout=10)
        assert programs and not still_loaded(programs)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("args, message", [
    (["--netns", "bpfscope-no-such-netns"], "no network namespace at /var/run/netns/bpfscope-no-such-netns"),
    (["--cgroup", "/no/such/cgroup"], "no cgroup at /no/such/cgroup"),
    (["--events", "connect,bogus"], "give some of connect,accept,close,retransmit,drop"),
])
def test_bad_input_is_one_line(args: list[str], message: str) -> None:
    result = subprocess.run([*BPFSCOPE, "tcp", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
