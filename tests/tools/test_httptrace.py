"""bpfscope httptrace end to end: real servers (Python's http.server; nginx with TLS) and real clients
(urllib; curl) on 127.0.0.1, every process started here and ended by its PID. Each request made
must appear exactly once per side that saw it, with the right method, path and status."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest

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

# http.server with one slow path, for --min-latency.
SLOW_SERVER = textwrap.dedent("""
    import sys, time
    from http.server import HTTPServer, SimpleHTTPRequestHandler
    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/slow":
                time.sleep(0.3)
            super().do_GET()
        def log_message(self, *args):
            pass
    HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
""")


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


@dataclass
class Server:
    proc: subprocess.Popen[Any]
    port: int

    @property
    def pid(self) -> int:
        return self.proc.pid


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "http-server"
    root.mkdir()
    (root / "a").write_text("hello\n" * 10)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "-d", str(root), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


def stop(proc: subprocess.Popen[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """SIGTERM; then every request and the final summary, parsed."""
    time.sleep(0.3)  # the last records reach the ring
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    records = [json.loads(line) for line in out.strip().splitlines()]
    assert records and records[-1]["final"] is True, out
    skip_if_missed(records[-1]["missed"])
    return records[:-1], records[-1]


def skip_if_missed(missed: int) -> None:
    """The tool said the kernel skipped runs of its programs: what it saw then cannot be complete."""
    if missed:
        pytest.skip(f"the kernel skipped {missed} run{'s' * (missed != 1)} of httptrace's programs (it runs one BPF "
                    "program at a time per CPU): the requests seen cannot be checked for completeness")


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


def of(requests: list[dict[str, Any]], pid: int) -> list[tuple[str, str, Optional[int]]]:
    return sorted((r["method"], r["path"], r["status"]) for r in requests if r["pid"] == pid)


def loaded_programs() -> str:
    return subprocess.run(["bpftool", "prog", "show"], capture_output=True, text=True, check=True).stdout


# --- plain HTTP ------------------------------------------------------------------------------

def test_python_server_and_urllib_client_each_request_once_per_side(http_server):
    proc = start_httptrace()
    try:
        client = urllib_client(http_server.port, "GET /a", "GET /missing", "POST /form")
    finally:
        requests, final = stop(proc)
    assert client.stdout.split() == ["200", "404", "501"]
    expected = sorted([("GET", "/a", 200), ("GET", "/missing", 404), ("POST", "/form", 501)])
    server = [r for r in requests if r["pid"] == http_server.pid]
    clients = [r for r in requests if r["pid"] == client.pid]  # type: ignore[attr-defined]
    assert of(requests, http_server.pid) == expected
    assert of(requests, client.pid) == expected  # type: ignore[attr-defined]
    assert {r["side"] for r in server} == {"server"} and {r["side"] for r in clients} == {"client"}
    assert not any(r["tls"] for r in server + clients)
    for r in server:
        assert r["local_port"] == http_server.port and r["latency_ms"] > 0
    for r in clients:
        assert r["remote_port"] == http_server.port and r["latency_ms"] > 0
    # Both ends count the same bytes each way; the POST carries its 11-byte body.
    by_path = {(r["side"], r["path"]): r for r in server + clients}
    for path in ("/a", "/missing", "/form"):
        s, c = by_path["server", path], by_path["client", path]
        assert (s["request_bytes"], s["response_bytes"]) == (c["request_bytes"], c["response_bytes"]), (s, c)
        assert s["request_bytes"] > 0 and s["response_bytes"] > 0
    assert by_path["server", "/a"]["response_bytes"] > len("hello\n" * 10)
    assert final["lost"] == 0


def test_summary_has_status_classes_and_percentiles(http_server):
    proc = start_httptrace("--port", str(http_server.port))
    try:
        urllib_client(http_server.port, *["GET /a"] * 5, "GET /missing", "GET /missing")
    finally:
        requests, final = stop(proc)
    assert final["requests"] == len(requests) == 14
    rows = {(p["path"], p["side"]): p for p in final["paths"]}
    for side in ("server", "client"):
        a, missing = rows["/a", side], rows["/missing", side]
        assert a["requests"] == 5 and a["status"] == {"2xx": 5}
        assert missing["requests"] == 2 and missing["status"] == {"4xx": 2}
        assert 0 < a["p50_ms"] <= a["p99_ms"]
        latencies = sorted(r["latency_ms"] for r in requests if r["path"] == "/a" and r["side"] == side)
        assert a["p99_ms"] == latencies[-1] and a["p50_ms"] == latencies[2]


def test_plain_output_and_summary_text(http_server):
    proc = subprocess.Popen([*BPFSCOPE, "httptrace", "--port", str(http_server.port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr.readline().startswith("bpfscope httptrace on")  # type: ignore[union-attr]
    try:
        urllib_client(http_server.port, "GET /a", "GET /missing")
    finally:
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    missed = re.search(r"records lost, ([\d,]+) program runs the kernel skipped", out)
    assert missed is not None, out
    skip_if_missed(int(missed.group(1).replace(",", "")))
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["TIME", "PID", "COMM", "SIDE"]
    rows = [line.split() for line in lines[1:5]]
    assert sorted((r[3], r[5], r[6], r[-1]) for r in rows) == [
        ("client", "GET", "200", "/a"), ("client", "GET", "404", "/missing"),
        ("server", "GET", "200", "/a"), ("server", "GET", "404", "/missing")]
    assert lines[5].startswith("4 requests in") and "0 records lost, 0 program runs the kernel skipped" in lines[5]
    assert any(line.split()[:3] == ["/a", "server", "1"] and line.endswith("2xx:1") for line in lines[6:])


# --- HTTPS through OpenSSL -------------------------------------------------------------------

def test_nginx_https_and_curl_through_the_ssl_uprobes(nginx_tls):
    proc = start_httptrace()
    try:
        pids = {path: curl(nginx_tls.port, path) for path in ("/hello.txt", "/nope", "/teapot", "/moved")}
        keep_alive = curl(nginx_tls.port, "/hello.txt", "/nope", "/teapot")  # one connection, three requests
    finally:
        requests, final = stop(proc)
    expected = {"/hello.txt": 200, "/nope": 404, "/teapot": 418, "/moved": 301}
    assert of(requests, nginx_tls.pid) == sorted(
        [("GET", p, s) for p, s in expected.items()] + [("GET", p, expected[p]) for p in ("/hello.txt", "/nope",
                                                                                          "/teapot")])
    for path, pid in pids.items():
        assert of(requests, pid) == [("GET", path, expected[path])]
    assert of(requests, keep_alive) == sorted(("GET", p, expected[p]) for p in ("/hello.txt", "/nope", "/teapot"))
    mine = [r for r in requests if r["pid"] in (nginx_tls.pid, keep_alive, *pids.values())]
    assert all(r["tls"] for r in mine)
    assert {r["side"] for r in mine if r["pid"] == nginx_tls.pid} == {"server"}
    assert {r["side"] for r in mine if r["pid"] != nginx_tls.pid} == {"client"}
    # The socket under each SSL * was found: ports are known.
    assert all(r["local_port"] == nginx_tls.port for r in mine if r["pid"] == nginx_tls.pid)
    assert all(r["remote_port"] == nginx_tls.port for r in mine if r["pid"] != nginx_tls.pid)
    # Plaintext sizes agree on both ends of the keep-alive connection.
    served = sorted((r["path"], r["request_bytes"], r["response_bytes"]) for r in mine
                    if r["pid"] == nginx_tls.pid and r["remote_port"] in
                    {c["local_port"] for c in mine if c["pid"] == keep_alive})
    fetched = sorted((r["path"], r["request_bytes"], r["response_bytes"]) for r in mine if r["pid"] == keep_alive)
    assert served == fetched
    assert final["lost"] == 0


# --- filters ---------------------------------------------------------------------------------

def test_port_filter_excludes_other_servers(http_server, nginx_tls):
    proc = start_httptrace("--port", str(http_server.port))
    try:
        client = urllib_client(http_server.port, "GET /a")
        other = curl(nginx_tls.port, "/hello.txt")
    finally:
        requests, _ = stop(proc)
    assert of(requests, http_server.pid) == [("GET", "/a", 200)]
    assert of(requests, client.pid) == [("GET", "/a", 200)]  # type: ignore[attr-defined]
    assert not of(requests, nginx_tls.pid) and not of(requests, other)
    assert all(http_server.port in (r["local_port"], r["remote_port"]) for r in requests)


def test_pid_filter_keeps_one_process(http_server, nginx_tls):
    proc = start_httptrace("--pid", str(nginx_tls.pid))
    try:
        client = urllib_client(http_server.port, "GET /a")
        fetcher = curl(nginx_tls.port, "/nope")
    finally:
        requests, _ = stop(proc)
    assert {r["pid"] for r in requests} == {nginx_tls.pid}
    assert of(requests, nginx_tls.pid) == [("GET", "/nope", 404)]
    assert not of(requests, client.pid) and not of(requests, fetcher)  # type: ignore[attr-defined]


def test_min_latency_keeps_only_slow_requests(tmp_path):
    (tmp_path / "slow").write_text("slow\n")
    (tmp_path / "fast").write_text("fast\n")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SLOW_SERVER, str(port)], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, server)
        proc = start_httptrace("--port", str(port), "--min-latency", "200")
        try:
            urllib_client(port, "GET /fast", "GET /slow", "GET /fast")
        finally:
            requests, final = stop(proc)
    finally:
        end(server)
    assert sorted((r["side"], r["path"]) for r in requests) == [("client", "/slow"), ("server", "/slow")]
    assert all(r["latency_ms"] >= 200 for r in requests)
    assert final["requests"] == 2 and [p["path"] for p in final["paths"]] == ["/slow", "/slow"]


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


def our_programs() -> list[str]:
    """httptrace's programs now loaded (by name: bpftool shows the first 15 characters)."""
    return [line for line in loaded_programs().splitlines() if "enter_ssl_free" in line or "enter_recvfrom" in line]


def failing(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs bpfscope httptrace expecting it to fail, and checks it left nothing loaded."""
    before = our_programs()
    result = bpfscope(*args)
    assert our_programs() == before
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
    before = our_programs()
    proc = start_httptrace("--port", str(http_server.port))
    assert len(our_programs()) == len(before) + 2
    stop(proc)
    assert our_programs() == before


# --- pieces ----------------------------------------------------------------------------------

def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99 and percentile(values, 100) == 100
    assert percentile([3.0], 50) == 3.0 and percentile([2.0, 1.0], 99) == 2.0


def test_nothing_stays_loaded_after_a_kill() -> None:
    # Tracepoints and uprobes are attached through perf event fds: they go with the process.
    proc = start_httptrace()
    assert our_programs()
    proc.kill()
    proc.wait(timeout=10)
    assert not our_programs()
