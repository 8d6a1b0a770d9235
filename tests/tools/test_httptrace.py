"""bpfscope httptrace end to end: real servers (Python's http.server; nginx with TLS) and real clients
(urllib; curl) on 127.0.0.1, every process started here and ended by its PID. Each request made
must appear exactly once per side that saw it, with the right method, path and status.

Where the kernel skipped runs of httptrace's programs (`missed`), fewer may be: one skipped run (the entry or
exit of one read or write, of one SSL_read or SSL_write) loses one buffer, so it spoils at most one request on one
side, its head or its response unseen (per_run=1 in completeness.assert_complete)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from completeness import assert_complete
from loaded import held_by, left_behind, loaded, still_loaded, unheld

from bpfscope.tools.httptrace import libssl_of, percentile

BPFSCOPE = [sys.executable, "-m", "bpfscope.cli.main"]

# A urllib client: one request per argument "METHOD PATH", printing the status it got.
CLIENT = textwrap.dedent("""
    import sys, urllib.error, urllib.request
    base = sys.argv[1]
    for spec in sys.argv[2:]:
        method, path = spec.split(" ", 1)
        data = b"field=value" if method in ("POST", "PUT") else None
        try:
            with urllib.request.urlopen(urllib.request.Request(base + path, data=data, method=method)) as r:
                r.read()
                print(r.status)
        except urllib.error.HTTPError as e:
            e.read()
            print(e.code)
""")

# http.server serving its working directory, with one slow path for --min-latency. It reads a POST's body before
# it answers 501 (as it does to any method it has no handler for): left unread, the body would reach its reads
# only when it happened to arrive with the head.
SERVER = textwrap.dedent("""
    import sys, time
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/slow":
                time.sleep(0.3)
            super().do_GET()
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_error(501, f"Unsupported method ({self.command!r})")
        def log_message(self, *args):
            pass
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
""")
A_BODY = "hello\n" * 10


# --- helpers -----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail(f"nothing listens on port {port}")


def end(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def connections_of(pid: int) -> int:
    """TCP connections process `pid` holds open: its sockets that are in /proc/net/tcp{,6} and not listening."""
    sockets = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            sockets.add(target[len("socket:["):-1])
    connected = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            connected.update(fields[9] for fields in map(str.split, f.readlines()[1:]) if fields[3] != "0A")
    return len(sockets & connected)


@dataclass
class Server:
    proc: subprocess.Popen[Any]
    port: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_idle(self) -> None:
        """Until the server has closed every connection. Its records are in the ring then: it answers before it
        closes, and the ring has each record before the call that made it returns. A client that has its answer
        proves less: a write's record is made at the write's return, after the client could read the data."""
        deadline = time.monotonic() + 10
        while connections_of(self.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not connections_of(self.pid), f"the server (pid {self.pid}) still holds a connection"


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "http-server"
    root.mkdir()
    (root / "a").write_text(A_BODY)
    (root / "slow").write_text("slow\n")
    (root / "fast").write_text("fast\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], cwd=root, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, proc)
        yield Server(proc, port)
    finally:
        end(proc)


@pytest.fixture
def nginx_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp_path = tmp_path_factory.mktemp("nginx")
    nginx, openssl = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin"), shutil.which("openssl")
    if nginx is None or openssl is None or shutil.which("curl") is None:
        pytest.skip("nginx, openssl and curl are needed (apt-get install nginx openssl curl)")
    www = tmp_path / "www"
    www.mkdir()
    (www / "hello.txt").write_text("hi\n")
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "1",
                    "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
                   check=True, capture_output=True)
    port = free_port()
    temp_paths = "\n".join(f"  {kind}_temp_path {tmp_path}/{kind};"
                           for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = tmp_path / "nginx.conf"
    conf.write_text(textwrap.dedent(f"""\
        daemon off;
        master_process off;
        worker_processes 1;
        pid {tmp_path}/nginx.pid;
        error_log {tmp_path}/error.log;
        events {{ worker_connections 64; }}
        http {{
          access_log {tmp_path}/access.log;
        {temp_paths}
          server {{
            listen 127.0.0.1:{port} ssl;
            ssl_certificate {tmp_path}/cert.pem;
            ssl_certificate_key {tmp_path}/key.pem;
            root {www};
            location = /teapot {{ return 418; }}
            location = /moved {{ return 301 /hello.txt; }}
          }}
        }}
        """))
    proc = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_listening(port, proc)
        assert libssl_of(proc.pid), "nginx should link libssl dynamically"
        yield Server(proc, port)
    finally:
        end(proc)


def start_httptrace(*extra: str) -> subprocess.Popen[str]:
    """`bpfscope httptrace --json`; returns once it is attached."""
    proc = subprocess.Popen([*BPFSCOPE, "httptrace", "--json", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stderr.readline()  # type: ignore[union-attr]
    if not first.startswith("bpfscope httptrace on"):
        proc.kill()
        _, err = proc.communicate(timeout=10)
        pytest.fail(f"bpfscope httptrace did not start: {first}{err}")
    return proc


def stop(proc: subprocess.Popen[str], *servers: Server) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Once `servers` are idle, SIGTERM; then every request and the final summary, parsed."""
    for server in servers:
        server.wait_idle()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    records = [json.loads(line) for line in out.strip().splitlines()]
    assert records and records[-1]["final"] is True, out
    return records[:-1], records[-1]


def urllib_client(port: int, *requests: str) -> subprocess.CompletedProcess[str]:
    """Runs the urllib client in its own process; `.pid` is set on the result."""
    proc = subprocess.Popen([sys.executable, "-c", CLIENT, f"http://127.0.0.1:{port}", *requests],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    result.pid = proc.pid  # type: ignore[attr-defined]
    return result


def curl(port: int, *paths: str) -> int:
    """One curl process fetching `paths` over one keep-alive connection; its pid."""
    args = ["curl", "-sk", "--max-time", "10"]
    for path in paths:
        args += ["-o", "/dev/null", f"https://127.0.0.1:{port}{path}"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return proc.pid


def of(requests: list[dict[str, Any]], *pids: int) -> list[dict[str, Any]]:
    return [r for r in requests if r["pid"] in pids]


def exchanges(requests: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What must be seen of each request, once per process that made or served it."""
    return [(r["pid"], r["side"], r["method"], r["path"], r["status"]) for r in requests]


def made(pid: int, side: str, *requests: tuple[str, str, int]) -> list[tuple[Any, ...]]:
    return [(pid, side, *request) for request in requests]


def answered(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The requests whose response was seen (all of them, where the kernel skipped no run)."""
    return [r for r in requests if r["status"] is not None]


# --- plain HTTP ------------------------------------------------------------------------------

def test_python_server_and_urllib_client_each_request_once_per_side(http_server):
    proc = start_httptrace()
    try:
        client = urllib_client(http_server.port, "GET /a", "GET /missing", "POST /form")
    finally:
        requests, final = stop(proc, http_server)
    assert client.stdout.split() == ["200", "404", "501"]
    expected = [("GET", "/a", 200), ("GET", "/missing", 404), ("POST", "/form", 501)]
    server, clients = of(requests, http_server.pid), of(requests, client.pid)  # type: ignore[attr-defined]
    assert_complete(exchanges(server + clients), made(http_server.pid, "server", *expected) +
                    made(client.pid, "client", *expected), missed=final["missed"])  # type: ignore[attr-defined]
    assert not any(r["tls"] for r in server + clients)
    assert all(r["local_port"] == http_server.port for r in server)
    assert all(r["remote_port"] == http_server.port for r in clients)
    assert all(r["latency_ms"] > 0 for r in answered(server + clients))
    # Both ends count the same bytes each way (the POST's 11-byte body too).
    assert_complete([(r["path"], r["request_bytes"], r["response_bytes"]) for r in answered(server)],
                    [(r["path"], r["request_bytes"], r["response_bytes"]) for r in answered(clients)],
                    missed=final["missed"])
    assert all(r["request_bytes"] > 0 and r["response_bytes"] > 0 for r in answered(server + clients))
    assert all(r["response_bytes"] > len(A_BODY) for r in answered(server) if r["path"] == "/a")
    assert final["lost"] == 0


def test_summary_has_status_classes_and_percentiles(http_server):
    proc = start_httptrace("--port", str(http_server.port))
    try:
        urllib_client(http_server.port, *["GET /a"] * 5, "GET /missing", "GET /missing")
    finally:
        requests, final = stop(proc, http_server)
    expected = [("/a", 200)] * 5 + [("/missing", 404)] * 2
    assert_complete([(r["side"], r["path"], r["status"]) for r in requests],
                    [(side, *request) for side in ("server", "client") for request in expected], missed=final["missed"])
    # The summary is these requests, per path and side: counts, status classes, nearest-rank percentiles.
    assert final["requests"] == len(requests)
    rows = {(p["path"], p["side"]): p for p in final["paths"]}
    assert set(rows) == {(r["path"], r["side"]) for r in requests}
    for (path, side), row in rows.items():
        mine = [r for r in requests if (r["path"], r["side"]) == (path, side)]
        assert row["requests"] == len(mine)
        assert row["status"] == Counter(f"{r['status'] // 100}xx" if r["status"] else "none" for r in mine)
        latencies = [r["latency_ms"] for r in answered(mine)]
        assert (row["p50_ms"], row["p99_ms"]) == (percentile(latencies, 50), percentile(latencies, 99))
        assert 0 < row["p50_ms"] <= row["p99_ms"]


def test_plain_output_and_summary_text(http_server):
    proc = subprocess.Popen([*BPFSCOPE, "httptrace", "--port", str(http_server.port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr.readline().startswith("bpfscope httptrace on")  # type: ignore[union-attr]
    try:
        urllib_client(http_server.port, "GET /a", "GET /missing")
    finally:
        http_server.wait_idle()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    header, *lines = out.splitlines()
    assert header.split()[:4] == ["TIME", "PID", "COMM", "SIDE"]
    summary = next(i for i, line in enumerate(lines) if re.match(r"\d+ requests in", line))
    rows = [line.split() for line in lines[:summary]]
    missed = re.search(r"0 records lost, ([\d,]+) program runs the kernel skipped", lines[summary])
    assert missed is not None, out
    seen = [(r[3], r[5], r[6], r[-1]) for r in rows]
    assert_complete(seen, [(side, "GET", status, path) for side in ("client", "server")
                           for status, path in (("200", "/a"), ("404", "/missing"))],
                    missed=int(missed.group(1).replace(",", "")))
    assert lines[summary].startswith(f"{len(rows)} requests in")
    if ("server", "GET", "200", "/a") in seen:
        assert any(line.split()[:3] == ["/a", "server", "1"] and line.endswith("2xx:1") for line in lines[summary + 1:])


# --- HTTPS through OpenSSL -------------------------------------------------------------------

def test_nginx_https_and_curl_through_the_ssl_uprobes(nginx_tls):
    proc = start_httptrace()
    try:
        pids = {path: curl(nginx_tls.port, path) for path in ("/hello.txt", "/nope", "/teapot", "/moved")}
        keep_alive = curl(nginx_tls.port, "/hello.txt", "/nope", "/teapot")  # one connection, three requests
    finally:
        requests, final = stop(proc, nginx_tls)
    status = {"/hello.txt": 200, "/nope": 404, "/teapot": 418, "/moved": 301}
    kept_alive = [("GET", path, status[path]) for path in ("/hello.txt", "/nope", "/teapot")]
    mine = of(requests, nginx_tls.pid, keep_alive, *pids.values())
    assert_complete(exchanges(mine),
                    made(nginx_tls.pid, "server", *[("GET", p, s) for p, s in status.items()], *kept_alive) +
                    [e for path, pid in pids.items() for e in made(pid, "client", ("GET", path, status[path]))] +
                    made(keep_alive, "client", *kept_alive), missed=final["missed"])
    assert all(r["tls"] for r in mine)
    # The socket under each SSL * was found: ports are known.
    assert all(r["local_port"] == nginx_tls.port for r in mine if r["pid"] == nginx_tls.pid)
    assert all(r["remote_port"] == nginx_tls.port for r in mine if r["pid"] != nginx_tls.pid)
    # Plaintext sizes agree on both ends of the keep-alive connection.
    served = [(r["path"], r["request_bytes"], r["response_bytes"]) for r in answered(mine)
              if r["pid"] == nginx_tls.pid and r["remote_port"] in
              {c["local_port"] for c in mine if c["pid"] == keep_alive}]
    fetched = [(r["path"], r["request_bytes"], r["response_bytes"]) for r in answered(of(mine, keep_alive))]
    assert_complete(served, fetched, missed=final["missed"])
    assert final["lost"] == 0


# --- filters ---------------------------------------------------------------------------------

def test_port_filter_excludes_other_servers(http_server, nginx_tls):
    proc = start_httptrace("--port", str(http_server.port))
    try:
        client = urllib_client(http_server.port, "GET /a")
        other = curl(nginx_tls.port, "/hello.txt")
    finally:
        requests, final = stop(proc, http_server, nginx_tls)
    assert_complete(exchanges(of(requests, http_server.pid, client.pid)),  # type: ignore[attr-defined]
                    made(http_server.pid, "server", ("GET", "/a", 200)) +
                    made(client.pid, "client", ("GET", "/a", 200)), missed=final["missed"])  # type: ignore[attr-defined]
    assert not of(requests, nginx_tls.pid, other)
    assert all(http_server.port in (r["local_port"], r["remote_port"]) for r in requests)


def test_pid_filter_keeps_one_process(http_server, nginx_tls):
    proc = start_httptrace("--pid", str(nginx_tls.pid))
    try:
        client = urllib_client(http_server.port, "GET /a")
        fetcher = curl(nginx_tls.port, "/nope")
    finally:
        requests, final = stop(proc, http_server, nginx_tls)
    assert {r["pid"] for r in requests} <= {nginx_tls.pid}
    assert_complete(exchanges(requests), made(nginx_tls.pid, "server", ("GET", "/nope", 404)), missed=final["missed"])
    assert not of(requests, client.pid, fetcher)  # type: ignore[attr-defined]


def test_min_latency_keeps_only_slow_requests(http_server):
    proc = start_httptrace("--port", str(http_server.port), "--min-latency", "200")
    try:
        urllib_client(http_server.port, "GET /fast", "GET /slow", "GET /fast")
    finally:
        requests, final = stop(proc, http_server)
    # A request whose response went unseen has no latency: it is kept, to be seen.
    assert_complete([(r["side"], r["path"], r["status"]) for r in requests],
                    [("client", "/slow", 200), ("server", "/slow", 200)], missed=final["missed"])
    assert all(r["latency_ms"] >= 200 for r in answered(requests))
    assert final["requests"] == len(requests)
    assert sorted((p["path"], p["side"]) for p in final["paths"]) == sorted({(r["path"], r["side"]) for r in requests})


# --- bad input -------------------------------------------------------------------------------

def bpfscope(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BPFSCOPE, "httptrace", *args], capture_output=True, text=True, timeout=60, check=False)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("bpfscope httptrace:")
    for text in expected:
        assert text in lines[0]


PROGRAMS = ("enter_ssl_free", "enter_recvfrom")  # two of its programs' names


def failing(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs bpfscope httptrace expecting it to fail, and checks it left nothing loaded."""
    before = unheld(PROGRAMS)
    result = bpfscope(*args)
    assert not left_behind(PROGRAMS, before)
    return result


def test_no_such_pid():
    # A pid above pid_max never exists.
    with open("/proc/sys/kernel/pid_max") as f:
        pid = int(f.read()) + 1
    assert_one_line_error(failing("--pid", str(pid), "--duration", "1"), f"no process with pid {pid}")


def test_pid_without_libssl():
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        assert not libssl_of(sleeper.pid)
        result = failing("--pid", str(sleeper.pid), "--duration", "1")
        assert_one_line_error(result, f"process {sleeper.pid} has no libssl", "--no-tls")
        # Plain HTTP of that process can still be traced.
        plain = bpfscope("--pid", str(sleeper.pid), "--no-tls", "--duration", "0.3", "--json")
        assert plain.returncode == 0, plain.stderr
        assert json.loads(plain.stdout.splitlines()[-1])["requests"] == 0
    finally:
        end(sleeper)


@pytest.mark.parametrize("value", ["0", "65536", "http", "-1"])
def test_bad_port(value):
    result = failing("--port", value)
    assert result.returncode == 2
    assert_one_line_error(result, "--port")


def test_a_finished_run_leaves_nothing_loaded(http_server):
    proc = start_httptrace("--port", str(http_server.port))
    its_programs = held_by(proc.pid)
    assert set(PROGRAMS) <= {name for id, name in loaded().items() if id in its_programs}
    stop(proc)
    assert not still_loaded(its_programs)


# --- pieces ----------------------------------------------------------------------------------

def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99 and percentile(values, 100) == 100
    assert percentile([3.0], 50) == 3.0 and percentile([2.0, 1.0], 99) == 2.0


def test_nothing_stays_loaded_after_a_kill() -> None:
    # Tracepoints and uprobes are attached through perf event fds: they go with the process.
    proc = start_httptrace()
    its_programs = held_by(proc.pid)
    assert set(PROGRAMS) <= {name for id, name in loaded().items() if id in its_programs}
    proc.kill()
    proc.wait(timeout=10)
    assert not still_loaded(its_programs)
