"""Running `bpfscope agent` as a process for the tests, and reading what it serves."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Optional

import yaml
from loaded import held_by
from prometheus_client.parser import text_string_to_metric_families

BPFSCOPE = [sys.executable, "-m", "bpfscope.cli.main"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AgentProcess:
    """`bpfscope agent --config FILE` started by a test; `stop()` sends SIGTERM and waits."""

    def __init__(self, config: dict[str, Any], workdir: Path, *extra: str) -> None:
        self.port = free_port()
        self.config = {"listen": f"127.0.0.1:{self.port}", **config}
        self.path = workdir / "agent.yaml"
        self.path.write_text(yaml.safe_dump(self.config))
        self.proc = subprocess.Popen([*BPFSCOPE, "agent", "--config", str(self.path), *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stderr = ""  # what it has said so far (said()), all of it after stop()
        deadline = time.monotonic() + 30
        while True:
            try:
                self.metrics()
                return
            except OSError:
                if self.proc.poll() is not None:
                    self.stderr = self.proc.stderr.read() if self.proc.stderr else ""
                    raise RuntimeError(f"the agent exited with {self.proc.returncode}: {self.stderr}") from None
                if time.monotonic() > deadline:
                    self.kill()
                    raise
                time.sleep(0.1)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rewrite(self, config: dict[str, Any]) -> None:
        self.config = {"listen": f"127.0.0.1:{self.port}", **config}
        self.path.write_text(yaml.safe_dump(self.config))

    def text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample served: (name, sorted labels) → value."""
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(self.text()) for s in family.samples}

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels` (0 if none)."""
        return sum(v for (n, ls), v in self.metrics().items()
                   if n == name and all(dict(ls).get(k) == want for k, want in labels.items()))

    def settled(self, name: str, expected: float, *, timeout: float = 10, **labels: str) -> float:
        """value(), read again until it is `expected` or `timeout` seconds have passed; the last value read.
        Frames sent across a veth are counted when the receiving end processes them, in a softirq that a busy
        machine may run after the sender has returned."""
        deadline = time.monotonic() + timeout
        while (value := self.value(name, **labels)) != expected and time.monotonic() < deadline:
            time.sleep(0.05)
        return value

    def said(self, text: str, timeout: float = 15) -> None:
        """Until a line the agent wrote to stderr holds `text` (what it says once it has done a thing, as a
        reload). Read from the bare fd, as communicate() in stop() reads the rest."""
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        while text not in self.stderr:
            left = deadline - time.monotonic()
            assert left > 0 and select.select([self.proc.stderr], [], [], left)[0], \
                f"the agent did not say {text!r} in {timeout} s: {self.stderr}"
            chunk = os.read(self.proc.stderr.fileno(), 65536)
            assert chunk, f"the agent ended before it said {text!r}: {self.stderr}"
            self.stderr += chunk.decode(errors="replace")

    def programs(self) -> set[int]:
        """IDs of the BPF programs the agent holds."""
        return held_by(self.pid)

    def stop(self, timeout: float = 10) -> float:
        """SIGTERM; returns how long the agent took to exit."""
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        _, rest = self.proc.communicate(timeout=timeout)
        self.stderr += rest
        return time.monotonic() - start

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)


class Prometheus:
    """Debian's prometheus on 127.0.0.1, scraping the given targets every `interval` seconds, with
    its storage in a fresh directory removed at `stop()`."""

    def __init__(self, targets: list[str], interval: float = 0.5) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is missing: `make test` installs Debian's prometheus package"
        self.dir = Path(tempfile.mkdtemp(prefix="bpfscope-prometheus-"))
        self.port = free_port()
        config = {"global": {"scrape_interval": f"{int(interval * 1000)}ms",
                             "scrape_timeout": f"{int(interval * 1000)}ms"},
                  "scrape_configs": [{"job_name": "bpfscope", "static_configs": [{"targets": targets}]}]}
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.proc = subprocess.Popen(
            [binary, f"--config.file={self.dir / 'prometheus.yml'}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("prometheus did not start")
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query through the HTTP API: the result vector."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def wait_for(self, promql: str, expected: float, timeout: float = 20) -> Optional[float]:
        """Polls `promql` (a single value) until it equals `expected`; returns the last value seen."""
        deadline = time.monotonic() + timeout
        last: Optional[float] = None
        while time.monotonic() < deadline:
            result = self.query(promql)
            if result:
                last = float(result[0]["value"][1])
                if last == expected:
                    return last
            time.sleep(0.25)
        return last

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()
        shutil.rmtree(self.dir, ignore_errors=True)


def status_caps(pid: int, tid: Optional[str] = None) -> dict[str, int]:
    """The Cap* lines of a process's (or one of its threads') status."""
    caps = {}
    with open(f"/proc/{pid}/task/{tid}/status" if tid else f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.startswith("Cap"):
                caps[key] = int(value.strip(), 16)
    return caps


def xdp_attached(iface: str) -> bool:
    return "xdp" in subprocess.run(["ip", "-d", "link", "show", "dev", iface], capture_output=True, text=True).stdout
