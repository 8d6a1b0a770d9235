"""`bpfscope bench agent`: what `bpfscope agent` costs with every built-in tool on, idle and under
load, against the issue's targets (idle ≤ 1 % of one core, RSS ≤ 80 MiB), beside Debian's
prometheus-node-exporter scraped the same way where it is installed.

The world is the benchmark's own: two VethPairs (packets and flows on the first one's root end,
guard, an XDP program of its own, on the second's), an nginx on 127.0.0.1 with its own prefix and
config in a temporary directory (Python's http.server where there is no nginx), openloop.c (the
opensnoop benchmark's openat + close loop) whose libc `close` funclatency times, and a pin directory
of its own under /sys/fs/bpf. The agent runs as the real command, `python3 -m bpfscope.cli.main
agent --config FILE`, in a child process; everything is removed at the end, on error too.

- **Idle**: after the agent answers and a few seconds of settling (scraped too, so first-scrape work
  is out of it), /metrics is scraped every second (the harsh case; Prometheus's default is 15 s)
  for `idle` seconds. CPU is utime + stime of the whole process from /proc/<pid>/stat (every thread,
  those that have exited included: the HTTP server starts one per scrape), over the wall time of
  each of `windows` windows, as % of one core: the median of the windows, with their range. RSS is
  VmRSS sampled at each scrape (the largest is given), VmHWM at the end of each phase; a scrape's
  time is GET /metrics on a new connection to the whole body read (the median), and the body's size.
- **Under load**, for `load` seconds, the same readings while: a raw AF_PACKET sender in each pair's
  namespace floods its veth (one frame after another, `flows` distinct UDP flows into the packets +
  flows end; 8 sources far over guard's limit into the guard end); openloop runs its loop; a child
  execs /bin/true (posix_spawn, then waitpid) in a loop; a child sends keep-alive GETs to nginx.
  Their rates are given, so the agent's cost per event can be read. With `bpf_stats`, the kernel's
  run-time statistics (BPF_ENABLE_STATS, held only for the load phase) give the time the agent's
  programs ran, charged to whoever triggered them, not to the agent.
- **Peer**: prometheus-node-exporter (default collectors) on 127.0.0.1, started by the benchmark,
  scraped in the same loop right beside the agent (the order alternating), measured the same way. It
  is the exporter a Prometheus node usually runs, not an eBPF tool: the reference for what one
  exporter's idle cost and scrape look like on this machine, not a like-for-like comparison."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import http.client
import json
import os
import re
import secrets
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from ..errors import BpfscopeError
from ..testing import packets
from ..testing.netns import VethPair
from . import Figure, Rounds
from . import rounds as over_rounds
from .opensnoop import _build_loop
from .startup import package_env

__all__ = ["run", "CPU_TARGET", "RSS_TARGET"]

CPU_TARGET = 1.0  # % of one core, idle
RSS_TARGET = 80.0  # MiB
PIN_PREFIX = "/sys/fs/bpf/bpfscope-bench-agent-"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_READY_TIMEOUT = 60.0
_LOOP_CHUNK = 20_000  # opens per "go" to openloop
_GUARD_SOURCES = 8
_BPF_STATS_RUN_TIME = 0  # enum bpf_stats_type

# One load generator, started before the agent and waiting: each line on stdin ("seconds") runs it
# that long and answers with one JSON line; end of input ends it.
_LOAD = r"""
import errno, json, os, socket, sys, time
kind = sys.argv[1]
if kind == "flood":
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: it never receives
    sock.bind((sys.argv[2], 0))
    frames = [bytes.fromhex(h) for h in sys.argv[3].split(",")]
    refused = 0

    def step():
        global refused
        sent = 0
        for frame in frames:
            try:
                sock.send(frame)
                sent += 1
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                refused += 1
        return sent
elif kind == "execs":
    argv = [sys.argv[2]]

    def step():
        for _ in range(10):
            _, status = os.waitpid(os.posix_spawn(argv[0], argv, {}), 0)
            if status:
                raise SystemExit(f"{argv[0]} exited with {status}")
        return 10
elif kind == "http":
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[2]), timeout=10)
    made = 0

    def step():
        global made
        for _ in range(20):
            conn.request("GET", f"/items/{made % 1000}")
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise SystemExit(f"HTTP {response.status}")
            made += 1
        return 20
else:
    raise SystemExit(f"unknown load {kind}")
print("ready", flush=True)
for line in sys.stdin:
    seconds = float(line)
    events, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        events += step()
    print(json.dumps({"events": events, "seconds": time.monotonic() - start}), flush=True)
"""

_NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location / {{ default_type text/plain; return 200 "ok\\n"; }}
  }}
}}
"""


# --- reading a process from /proc ---

def _cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of `pid`, exited ones included (/proc/<pid>/stat)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()  # from field 3 (state) on
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _memory_kib(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM and RSS's parts (RssAnon, RssFile, RssShmem) of `pid`, in KiB."""
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                found[key] = int(value.split()[0])
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _scrape(port: int, timeout: float = 10.0) -> tuple[float, bytes]:
    """GET /metrics on a new connection, the body read to its end: (seconds, body)."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise BpfscopeError(errno.EIO, f"GET http://127.0.0.1:{port}/metrics: HTTP {response.status}")
    return time.perf_counter() - start, body


def _tail(path: str) -> str:
    try:
        lines = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


# --- the processes the benchmark starts ---

class _Server:
    """A process serving /metrics on 127.0.0.1:port (the agent, or the peer exporter)."""

    def __init__(self, name: str, argv: list[str], port: int, log: str, env: Optional[dict[str, str]] = None) -> None:
        self.name = name
        self.port = port
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env)
        self.pid = self.proc.pid

    def wait_ready(self, timeout: float = _READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            try:
                _scrape(self.port, timeout=2.0)
                return
            except (OSError, http.client.HTTPException):
                if time.monotonic() > deadline:
                    raise BpfscopeError(errno.ETIMEDOUT, f"{self.name} did not serve /metrics in {timeout:g} s: "
                                        f"{_tail(self.log)}") from None
                time.sleep(0.05)

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise BpfscopeError(errno.EIO, f"{self.name} exited ({self.proc.returncode}): {_tail(self.log)}")

    def stop(self) -> None:
        """SIGTERM by pid, SIGKILL after 15 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class _Nginx:
    """nginx on 127.0.0.1:port with its own prefix, config, logs and temp paths under `prefix`; with
    no nginx on PATH, Python's http.server instead."""

    def __init__(self, prefix: str, port: int) -> None:
        self.port = port
        self.log = os.path.join(prefix, "error.log")
        binary = shutil.which("nginx")
        self.name = "nginx" if binary else "python3 -m http.server"
        os.makedirs(prefix, exist_ok=True)
        if binary:
            conf = os.path.join(prefix, "nginx.conf")
            Path(conf).write_text(_NGINX_CONF.format(prefix=prefix, port=port))
            argv = [binary, "-p", prefix, "-c", conf, "-e", self.log]
        else:
            Path(prefix, "items").mkdir(exist_ok=True)
            for i in range(1000):
                Path(prefix, "items", str(i)).write_text("ok\n")
            argv = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", prefix, str(port)]
        with open(os.path.join(prefix, "stderr"), "wb") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise BpfscopeError(errno.EIO, f"{self.name} exited ({self.proc.returncode}): "
                                    f"{_tail(self.log) or _tail(os.path.join(prefix, 'stderr'))}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                return
            if time.monotonic() > deadline:
                raise BpfscopeError(errno.ETIMEDOUT, f"{self.name} is not listening on 127.0.0.1:{port}")
            time.sleep(0.05)

    def _workers(self) -> list[int]:
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    text = Path(f"/proc/{entry}/stat").read_text()
                    if int(text[text.rindex(")") + 2:].split()[1]) == self.proc.pid:
                        found.append(int(entry))
        return found

    def stop(self) -> None:
        """SIGTERM to the master (nginx stops its workers); its workers by pid if it did not."""
        if self.proc.poll() is None:
            workers = self._workers()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


class _Load:
    """One load generator child (the _LOAD script), ready and waiting for its go."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        self.name = name
        self.proc = proc
        self._line()  # "ready"

    def _line(self, timeout: float = 30.0) -> bytes:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            err = b""
            if self.proc.poll() is not None and self.proc.stderr is not None:
                err = self.proc.stderr.read()
            lines = err.decode(errors="replace").strip().splitlines()
            raise BpfscopeError(errno.EIO, f"load generator {self.name} failed: "
                                f"{lines[-1] if lines else 'no answer'}")
        return line

    def go(self, seconds: float) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{seconds}\n".encode())
        self.proc.stdin.flush()

    def result(self, timeout: float) -> tuple[int, float]:
        answer = json.loads(self._line(timeout))
        return int(answer["events"]), float(answer["seconds"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


class _OpenLoop:
    """openloop (the opensnoop benchmark's C loop), driven from a thread: chunks of opens until the
    time is up."""

    def __init__(self, binary: str) -> None:
        self.proc = subprocess.Popen([binary, "/dev/null", str(_LOOP_CHUNK)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        self.pid = int(self.proc.stdout.readline())
        self._thread: Optional[threading.Thread] = None
        self._result: tuple[int, float] = (0, 0.0)
        self._error: Optional[BaseException] = None

    def go(self, seconds: float) -> None:
        def drive() -> None:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            opens, start = 0, time.monotonic()
            try:
                while time.monotonic() - start < seconds:
                    self.proc.stdin.write(b"go\n")
                    self.proc.stdin.flush()
                    made, failed, _ = map(int, self.proc.stdout.readline().split())
                    if failed:
                        raise BpfscopeError(errno.EIO, f"openloop: {failed} of {made} opens failed")
                    opens += made
            except BaseException as exc:  # handed to result()
                self._error = exc
            self._result = (opens, time.monotonic() - start)

        self._thread = threading.Thread(target=drive, name="bpfscope-bench-openloop", daemon=True)
        self._thread.start()

    def result(self, timeout: float) -> tuple[int, float]:
        assert self._thread is not None
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise BpfscopeError(errno.ETIMEDOUT, "openloop did not finish")
        if self._error is not None:
            raise self._error
        return self._result

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.communicate(timeout=10)  # end of input ends it
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()


# --- measuring ---

@dataclass
class _Reading:
    """One process over one phase."""

    seconds: float = 0.0
    cpu_seconds: float = 0.0
    windows: list[float] = field(default_factory=list)  # % of a core in each window
    rss_kib: list[int] = field(default_factory=list)  # at each scrape
    hwm_kib: int = 0  # at the end
    parts_kib: dict[str, int] = field(default_factory=dict)  # RssAnon, RssFile, RssShmem at the end
    scrapes: list[float] = field(default_factory=list)  # seconds
    sizes: list[int] = field(default_factory=list)  # bytes
    body: bytes = b""  # the last

    @property
    def cpu_percent(self) -> float:
        return 100 * self.cpu_seconds / self.seconds

    @property
    def rss_mib(self) -> float:
        return max(self.rss_kib) / 1024

    @property
    def scrape_ms(self) -> float:
        return 1000 * statistics.median(self.scrapes)

    @property
    def size_kib(self) -> float:
        return statistics.median(self.sizes) / 1024


def _phase(servers: list[_Server], seconds: float, windows: int, every: float, *, scrape: bool = True
           ) -> dict[str, _Reading]:
    """Scrapes every server each `every` seconds for `seconds` (the order alternating), or with
    `scrape` false only looks at them; their CPU time at each of `windows` equal windows' ends,
    their RSS at each tick."""
    readings = {s.name: _Reading() for s in servers}
    start = time.monotonic()
    ends = [start + seconds * (i + 1) / windows for i in range(windows)]
    marks = {s.name: (start, _cpu_seconds(s.pid)) for s in servers}
    first = dict(marks)
    tick = start
    turn = 0
    while ends:
        now = time.monotonic()
        if now >= ends[0]:
            ends.pop(0)
            for s in servers:
                cpu = _cpu_seconds(s.pid)
                was = marks[s.name]
                readings[s.name].windows.append(100 * (cpu - was[1]) / (now - was[0]))
                marks[s.name] = (now, cpu)
            continue
        if now >= tick:
            turn += 1
            for s in servers[turn % len(servers):] + servers[:turn % len(servers)]:
                s.check()
                reading = readings[s.name]
                if scrape:
                    took, body = _scrape(s.port)
                    reading.scrapes.append(took)
                    reading.sizes.append(len(body))
                    reading.body = body
                reading.rss_kib.append(_memory_kib(s.pid)["VmRSS"])
            tick += every
            continue
        time.sleep(max(0.0, min(tick, ends[0]) - now))
    for s in servers:
        reading = readings[s.name]
        reading.seconds = marks[s.name][0] - first[s.name][0]
        reading.cpu_seconds = marks[s.name][1] - first[s.name][1]
        memory = _memory_kib(s.pid)
        reading.hwm_kib = memory["VmHWM"]
        reading.parts_kib = {k: v for k, v in memory.items() if k.startswith("Rss")}
    return readings


def _rx(iface: str) -> int:
    return int(Path(f"/sys/class/net/{iface}/statistics/rx_packets").read_text())


_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)", re.MULTILINE)


def _total(body: bytes, name: str, *labels: str) -> float:
    """The sum of the samples of counter or metric `name` whose labels contain every one of `labels`."""
    return sum(float(value) for metric, found, value in _SAMPLE.findall(body.decode(errors="replace"))
               if metric in (name, f"{name}_total") and all(label in (found or "") for label in labels))


# --- the kernel's run-time statistics of the agent's programs ---

@contextlib.contextmanager
def _bpf_stats(enabled: bool) -> Iterator[bool]:
    """BPF_ENABLE_STATS (run time) held while inside; yields whether it is on."""
    if not enabled or shutil.which("bpftool") is None:
        yield False
        return
    from .. import _libbpf

    enable = _libbpf.lib.bpf_enable_stats
    enable.argtypes = [ctypes.c_int]
    enable.restype = ctypes.c_int
    fd = enable(_BPF_STATS_RUN_TIME)
    if fd < 0:
        yield False
        return
    try:
        yield True
    finally:
        os.close(fd)


def _programs_of(pid: int) -> dict[int, tuple[str, int, int]]:
    """id → (name, run_time_ns, run_cnt) of every BPF program process `pid` holds, through a program
    fd or a link fd (the `prog_id` in /proc/<pid>/fdinfo; Debian's bpftool shows no pids)."""
    ids: set[int] = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        with contextlib.suppress(OSError):
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
            ids.update(int(m) for m in re.findall(r"^prog_id:\s*(\d+)$", text, re.MULTILINE))
    shown = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True)
    if shown.returncode != 0:
        return {}
    return {p["id"]: (p.get("name", "?"), int(p.get("run_time_ns", 0)), int(p.get("run_cnt", 0)))
            for p in json.loads(shown.stdout or "[]") if p.get("id") in ids}


# --- the run ---

@dataclass
class _Loads:
    seconds: float = 0.0
    rates: dict[str, float] = field(default_factory=dict)  # per second
    events: dict[str, int] = field(default_factory=dict)
    bpf: Optional[dict[str, tuple[int, int]]] = None  # program name → (run_time_ns, run_cnt) over the phase


def run(
    *, idle: float = 30.0, load: float = 20.0, settle: float = 3.0, bare: float = 12.0, windows: int = 5,
    every: float = 1.0, flows: int = 64, peer: bool = True, bpf_stats: bool = True,
) -> list[Figure]:
    """`settle` seconds after the agent answers (scraped), `bare` seconds idle and not scraped, then
    `idle` seconds scraped every `every` seconds, then `load` seconds under load and scraped, the
    last two phases' CPU read in `windows` windows as well. `flows`:
    distinct UDP flows in the flood on the packets + flows veth. `peer`: prometheus-node-exporter
    beside the agent, where it is installed. `bpf_stats`: the agent's programs' kernel run time
    under load (BPF_ENABLE_STATS, only during the load phase)."""
    if not 1 <= flows <= 4096:
        raise BpfscopeError(errno.EINVAL, f"flows {flows} is out of range (1 to 4096)")
    exporter = (shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")) if peer else None
    pin_dir = PIN_PREFIX + secrets.token_hex(4)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bpfscope-bench-agent-"))
        binary = _build_loop(tmp)
        counted = stack.enter_context(VethPair())  # packets + flows
        guarded = stack.enter_context(VethPair())  # guard
        web_port = _free_port()
        web = _Nginx(os.path.join(tmp, "web"), web_port)
        stack.callback(web.stop)
        loop = _OpenLoop(binary)
        stack.callback(loop.stop)
        env = package_env(os.path.join(tmp, "pycache"))
        loads = _start_loads(stack, counted, guarded, web_port, flows, env)

        config = {
            "listen": f"127.0.0.1:{_free_port()}",
            "pin_dir": pin_dir,
            "tools": {
                "packets": {"interfaces": [counted.host]},
                "flows": {"interfaces": [counted.host], "top": 20},
                "guard": {"interface": guarded.host, "rate": 1000, "burst": 200},
                "opens": {},
                "execs": {},
                "funclatency": [{"function": "libc:close", "pid": loop.pid}],
                "http": {"port": web_port, "tls": False},
            },
        }
        config_path = os.path.join(tmp, "agent.yaml")
        Path(config_path).write_text(yaml.safe_dump(config, sort_keys=False))
        if os.path.exists(pin_dir):
            raise BpfscopeError(errno.EEXIST, f"{pin_dir} exists already")
        stack.callback(_remove_pins, pin_dir)
        agent_port = int(str(config["listen"]).rpartition(":")[2])
        bound = settle + bare + idle + load + 120  # the agent stops by itself even if this process dies
        agent = _Server("bpfscope agent", [sys.executable, "-m", "bpfscope.cli.main", "agent", "--config",
                                           config_path, "--duration", str(bound)],
                        agent_port, os.path.join(tmp, "agent.log"), env)
        stack.callback(agent.stop)
        agent.wait_ready()
        servers = [agent]
        if exporter:
            node_port = _free_port()
            node = _Server("node exporter", [exporter, f"--web.listen-address=127.0.0.1:{node_port}"], node_port,
                           os.path.join(tmp, "node-exporter.log"))
            stack.callback(node.stop)
            node.wait_ready()
            servers.append(node)

        _phase(servers, settle, 1, every)
        unscraped = _phase(servers, bare, 1, every, scrape=False)
        quiet = _phase(servers, idle, windows, every)

        rx_before = {pair.host: _rx(pair.host) for pair in (counted, guarded)}
        with _bpf_stats(bpf_stats) as stats_on:
            programs_before = _programs_of(agent.pid) if stats_on else {}
            loop.go(load)
            for generator in loads.values():
                generator.go(load)
            busy = _phase(servers, load, windows, every)
            results = {name: generator.result(30.0) for name, generator in loads.items()}
            results["opens"] = loop.result(30.0)
            programs_after = _programs_of(agent.pid) if stats_on else {}
        time.sleep(0.05)  # what the veth rings still held
        rx = {label: _rx(pair.host) - rx_before[pair.host]
              for label, pair in (("packets", counted), ("guard", guarded))}
        final = _scrape(agent.port)[1]

    work = _Loads(seconds=busy[agent.name].seconds)
    for name, (events, seconds) in results.items():
        work.events[name] = events
        work.rates[name] = events / seconds
    for label, count in rx.items():
        work.events[f"rx {label}"] = count
    if programs_after:
        work.bpf = {}
        for prog_id, (name, run_ns, runs) in programs_after.items():
            was = programs_before.get(prog_id, (name, 0, 0))
            total = work.bpf.get(name, (0, 0))
            work.bpf[name] = (total[0] + run_ns - was[1], total[1] + runs - was[2])
    return _figures(agent.name, {"bare": unscraped, "idle": quiet, "load": busy}, work, final, every=every,
                    windows=windows, flows=flows, web=web.name, peer=servers[1].name if len(servers) > 1 else None)


def _start_loads(stack: contextlib.ExitStack, counted: VethPair, guarded: VethPair, web_port: int, flows: int,
                 env: dict[str, str]) -> dict[str, _Load]:
    flow_frames = [packets.udp_frame(src_mac=counted.peer_mac, dst_mac=counted.host_mac, src_ip=counted.peer_ip,
                                     dst_ip=counted.host_ip, sport=40000 + i, dport=9, payload=bytes(18))
                   for i in range(flows)]
    guard_frames = [packets.udp_frame(src_mac=guarded.peer_mac, dst_mac=guarded.host_mac,
                                      src_ip=f"198.51.100.{8 + i}", dst_ip=guarded.host_ip, sport=40000, dport=9,
                                      payload=bytes(18)) for i in range(_GUARD_SOURCES)] * 8
    argv = [sys.executable, "-c", _LOAD]
    pipes: dict[str, Any] = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE,
                             "env": env}
    loads: dict[str, _Load] = {}
    for name, pair, frames in (("packets", counted, flow_frames), ("guard", guarded, guard_frames)):
        proc = pair.popen([*argv, "flood", pair.peer, ",".join(f.hex() for f in frames)], **pipes)
        stack.callback(_stop_process, proc)  # VethPair.close() kills it too; this first closes its pipes
        loads[name] = _Load(f"flood into {pair.host}", proc)
        stack.callback(loads[name].stop)
    for name, args in (("execs", ["execs", "/bin/true"]), ("http", ["http", str(web_port)])):
        proc = subprocess.Popen([*argv, *args], **pipes)
        stack.callback(_stop_process, proc)
        loads[name] = _Load(name, proc)
        stack.callback(loads[name].stop)
    return loads


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


def _remove_pins(pin_dir: str) -> None:
    """The agent removes its pins when it stops; what is left (a kill) goes here. Only this run's."""
    if pin_dir.startswith(PIN_PREFIX) and os.path.isdir(pin_dir):
        shutil.rmtree(pin_dir, ignore_errors=True)


# How one figure is read from a phase's reading (of the agent or the peer): value and range.
_Statistic = Callable[[Optional[_Reading]], tuple[Optional[float], Optional[Rounds]]]


def _figures(
    agent: str, phases: dict[str, dict[str, _Reading]], work: _Loads, final: bytes, *, every: float, windows: int,
    flows: int, web: str, peer: Optional[str],
) -> list[Figure]:
    n, a, b = (phases[k][agent] for k in ("bare", "idle", "load"))
    pn, pa, pb = (phases[k][peer] for k in ("bare", "idle", "load")) if peer else (None, None, None)
    peer_name = "prometheus-node-exporter" if peer else None

    def per_scrape(quiet: _Reading, bare: _Reading) -> float:
        """CPU per scrape, ms: the scraped phase's CPU less the unscraped phase's rate over as long."""
        return 1000 * (quiet.cpu_seconds - bare.cpu_percent / 100 * quiet.seconds) / len(quiet.scrapes)

    def at_15_s(quiet: _Reading, bare: _Reading) -> float:
        return bare.cpu_percent + 100 * per_scrape(quiet, bare) / 1000 / 15

    def rss_parts(reading: _Reading) -> str:
        return ", ".join(f"{k[3:]} {v / 1024:.1f}" for k, v in reading.parts_kib.items())

    def cpu(reading: Optional[_Reading]) -> tuple[Optional[float], Optional[Rounds]]:
        """The median of the phase's windows and their range: the same for the agent and the peer."""
        return over_rounds(reading.windows) if reading else (None, None)

    def rss(reading: Optional[_Reading]) -> tuple[Optional[float], Optional[Rounds]]:
        """The largest VmRSS sample (a ceiling is judged by the peak) and the samples' range."""
        if reading is None:
            return None, None
        return reading.rss_mib, (min(reading.rss_kib) / 1024, max(reading.rss_kib) / 1024)

    def scrape(reading: Optional[_Reading]) -> tuple[Optional[float], Optional[Rounds]]:
        return over_rounds(1000 * t for t in reading.scrapes) if reading else (None, None)

    def figure(name: str, of: _Statistic, ours: _Reading, unit: str, note: str, reference: Optional[str] = peer_name,
               theirs: Optional[_Reading] = None, target: Optional[float] = None) -> Figure:
        value, spread = of(ours)
        reference_value, reference_spread = of(theirs)
        assert value is not None
        return Figure("agent", name, value, unit, False, target=target,
                      reference=reference if reference_value is not None else None,
                      reference_value=reference_value, spread=spread, reference_spread=reference_spread, note=note)

    how_cpu = (f"utime + stime of the whole process (/proc/<pid>/stat: every thread, exited ones too; 10 ms ticks, "
               f"±{100 * 0.01 / (a.seconds / windows):.2f} % per window) in each of {windows} windows of "
               f"{a.seconds / windows:.0f} s, scraped every {every:g} s (the harsh case; Prometheus's default is "
               f"15 s); the median of the windows, range beside it, for both")
    how_bare = f"the same over {n.seconds:.0f} s (one window) with no scrape, right before the scraped phase"
    how_per_scrape = (f"(scraped phase's CPU − the unscraped phase's rate × its length) ÷ {len(a.scrapes)} scrapes; "
                      "ticks of 10 ms make this ±1 ms or so")
    how_15 = "the unscraped rate + CPU per scrape ÷ 15 s: estimated from the two figures above, not measured"
    how_load_cpu = (f"the same in {windows} windows of {b.seconds / windows:.0f} s under the load below, scraped every "
                    f"{every:g} s; the median of the windows, range beside it")
    how_rss = (f"VmRSS from /proc/<pid>/status at each scrape: the largest, the samples' range beside it; its parts "
               f"at the end of the idle phase, in MiB: agent {rss_parts(a)}"
               + (f"; node exporter {rss_parts(pa)}" if pa else "") + f"; at the end of the load phase: agent "
               f"{rss_parts(b)}")
    how_hwm = "VmHWM from /proc/<pid>/status at the end of the load phase: the peak since the process started"
    how_scrape = (f"GET /metrics on a new connection until the body is read, median of {len(a.scrapes)} scrapes "
                  f"(idle) and {len(b.scrapes)} (under load), range beside it")
    figures = [
        figure(f"idle: agent CPU, scraped every {every:g} s", cpu, a, "% of a core", how_cpu, theirs=pa,
               target=CPU_TARGET),
        Figure("agent", "idle: agent CPU, not scraped", n.cpu_percent, "% of a core", False,
               reference=peer_name, reference_value=pn.cpu_percent if pn else None, note=how_bare),
        Figure("agent", "idle: agent CPU per scrape", per_scrape(a, n), "ms", False,
               reference=peer_name, reference_value=per_scrape(pa, pn) if pa and pn else None, note=how_per_scrape),
        Figure("agent", "idle: agent CPU, scraped every 15 s (estimate)", at_15_s(a, n), "% of a core", False,
               target=CPU_TARGET, reference=peer_name, reference_value=at_15_s(pa, pn) if pa and pn else None,
               note=how_15),
        figure("idle: agent RSS (VmRSS)", rss, a, "MiB", how_rss, theirs=pa, target=RSS_TARGET),
        figure("idle: one scrape of /metrics", scrape, a, "ms", how_scrape, theirs=pa),
        Figure("agent", "idle: /metrics size", a.size_kib, "KiB", False,
               reference=peer_name, reference_value=pa.size_kib if pa else None,
               note="text format 0.0.4, no gzip (Prometheus asks for gzip, which costs the exporter more CPU)"),
        figure("under load: agent CPU", cpu, b, "% of a core", how_load_cpu, reference="the agent idle", theirs=a),
        figure("under load: agent RSS (VmRSS)", rss, b, "MiB", how_rss, theirs=pb, target=RSS_TARGET),
        Figure("agent", "agent peak RSS (VmHWM), start to end", b.hwm_kib / 1024, "MiB", False, target=RSS_TARGET,
               reference=peer_name, reference_value=pb.hwm_kib / 1024 if pb else None, note=how_hwm),
        figure("under load: one scrape of /metrics", scrape, b, "ms", how_scrape, reference="the agent idle",
               theirs=a),
        Figure("agent", "under load: /metrics size", b.size_kib, "KiB", False,
               reference="the agent idle", reference_value=a.size_kib,
               note=f"flows exports the top 20 of the {flows} flows of the flood (and the ICMP replies)"),
    ]
    if pb is not None:
        figures.append(figure("under load: node exporter CPU (the peer)", cpu, pb, "% of a core", how_load_cpu,
                              reference="the node exporter idle", theirs=pa))

    seconds = work.seconds
    seen_http = _total(final, "bpfscope_http_requests", 'side="server"')
    seen_execs = _total(final, "bpfscope_execs", 'comm="true"')
    seen_opens = _total(final, "bpfscope_file_opens", 'comm="openloop"')
    seen_calls = _total(final, "bpfscope_function_latency_seconds_count")
    seen_dropped = _total(final, "bpfscope_guard_packets", 'verdict="dropped"')
    seen_packets = _total(final, "bpfscope_packets", "interface=")
    added = b.cpu_seconds - a.cpu_seconds / a.seconds * b.seconds
    figures += [
        Figure("agent", "load: packets into the packets + flows veth", work.events["rx packets"] / seconds,
               "packets/s", True, note=f"rx_packets of the veth end over the load phase; raw AF_PACKET sends from "
               f"its namespace, {flows} UDP flows of 60-byte frames; the agent counted {seen_packets:,.0f} packets "
               f"there since it started"),
        Figure("agent", "load: packets into the guard veth", work.events["rx guard"] / seconds, "packets/s", True,
               note=f"{_GUARD_SOURCES} sources, each far over guard's 1,000/s (burst 200); guard dropped "
                    f"{seen_dropped:,.0f} in all"),
        Figure("agent", "load: openat + close (openloop)", work.rates["opens"], "opens/s", True,
               note=f"/dev/null, chunks of {_LOOP_CHUNK:,}; funclatency times its libc close() (uprobe + "
                    f"uretprobe, filtered to its pid); of its {work.events['opens']:,} opens the agent counted "
                    f"{seen_opens:,.0f} and timed {seen_calls:,.0f} closes"),
        Figure("agent", "load: execs of /bin/true", work.rates["execs"], "execs/s", True,
               note=f"posix_spawn + waitpid in a loop; the agent counted {seen_execs:,.0f} execs of true "
                    f"(this load made {work.events['execs']:,})"),
        Figure("agent", f"load: HTTP requests ({web}, keep-alive)", work.rates["http"], "requests/s", True,
               note=f"one client, GET /items/N; the agent counted {seen_http:,.0f} of "
                    f"{work.events['http']:,} server-side (the rest still open or pending)"),
        Figure("agent", "agent CPU above idle per HTTP request", 1e6 * added / max(1, work.events["http"]),
               "µs/request", False,
               note="(CPU under load − the idle rate × the load's time) ÷ requests; HTTP is the one tool whose "
                    "events the agent's Python reads one by one (from a ring buffer, on its reader thread); the "
                    "others count in the kernel and are read per scrape"),
    ]
    if work.bpf:
        run_ns = sum(ns for ns, _ in work.bpf.values())
        top = sorted(work.bpf.items(), key=lambda item: -item[1][0])[:6]
        detail = "; ".join(f"{name} {runs / seconds:,.0f}/s × {ns / runs:.0f} ns" for name, (ns, runs) in top if runs)
        figures.append(Figure(
            "agent", "under load: the agent's BPF programs' run time", 100 * run_ns / 1e9 / seconds, "% of a core",
            False, note=f"BPF_ENABLE_STATS during the load phase only; kernel time charged to the processes that "
                        f"triggered the programs, not to the agent; the largest: {detail}"))
    return figures
