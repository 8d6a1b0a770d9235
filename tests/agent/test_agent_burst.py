"""The agent under a burst of a million ring buffer events: every event the kernel tried to send is
either read or counted as lost, the lost count is the kernel's own, and /metrics keeps answering."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from .agentproc import AgentProcess

HEADS_C = Path(__file__).parent / "c" / "heads.c"


@pytest.fixture
def heads_binary(tmp_path: Path) -> Path:
    binary = tmp_path / "heads"
    subprocess.run(["gcc", "-O2", "-o", str(binary), str(HEADS_C)], check=True)
    return binary


def kernel_lost(pin: str) -> int:
    """The per-CPU lost counter, read by bpftool from the pinned map: not through the agent."""
    out = subprocess.run(["bpftool", "-j", "map", "dump", "pinned", pin], capture_output=True, text=True,
                         check=True).stdout
    entries = json.loads(out)
    return sum(int(cpu["value"]) for entry in entries for cpu in entry["formatted"]["values"])


def test_a_million_events_are_read_or_counted_lost(heads_binary, bpffs_dir, tmp_path):
    iterations = 250_001
    # Each iteration writes a request head into a socketpair (the client's side) and reads it
    # (the server's): two REQUEST records; each but the first on either side also ends the
    # exchange before it with an END record.
    expected = 4 * iterations - 2
    loop = subprocess.Popen([str(heads_binary), str(iterations)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    pins = str(bpffs_dir / "agent")
    agent = AgentProcess({"pin_dir": pins, "ring_bytes": 65536,
                          "tools": {"http": {"pid": loop.pid, "tls": False}}}, tmp_path)
    scrape_seconds: list[float] = []
    bursting = threading.Event()
    bursting.set()

    def scrape() -> None:
        while bursting.is_set():
            start = time.monotonic()
            agent.text()
            scrape_seconds.append(time.monotonic() - start)
            time.sleep(0.05)

    scraper = threading.Thread(target=scrape)
    try:
        scraper.start()
        out, _ = loop.communicate("go\n", timeout=120)
        assert out.strip() == "done"
        deadline = time.monotonic() + 15
        while True:
            received = agent.value("bpfscope_ringbuf_received_events_total", tool="http")
            lost = agent.value("bpfscope_ringbuf_lost_events_total", tool="http")
            if received + lost >= expected or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        bursting.clear()
        scraper.join()
        assert received + lost == expected >= 1_000_000
        assert lost > 0, "a 64 KiB ring must overflow under this burst"
        assert lost == kernel_lost(f"{pins}/http/events_lost")
        assert len(scrape_seconds) >= 5 and max(scrape_seconds) < 1.0, scrape_seconds
    finally:
        bursting.clear()
        if scraper.is_alive():
            scraper.join()
        if loop.poll() is None:
            loop.kill()
            loop.communicate()
        agent.stop()
    assert agent.proc.returncode == 0, agent.stderr
