"""A tool's JSON lines read while it runs. Its interval records say what the kernel has counted so far, and
frames a test sent across a veth are counted when the receiving end processes them: in a softirq that a busy
machine may run after the sender has returned. A test waits for the count it expects, not for a while."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import Any, Callable

BPFSCOPE = [sys.executable, "-m", "bpfscope.cli.main"]


def records_until(proc: subprocess.Popen[str], done: Callable[[dict[str, Any]], bool], *,
                  timeout: float = 10.0) -> list[dict[str, Any]]:
    """The records `proc` prints, one JSON object a line, up to the first for which `done` holds."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    records: list[dict[str, Any]] = []
    while True:
        line = proc.stdout.readline()
        assert line, f"the tool ended early: {proc.stderr.read() if proc.stderr else ''}"
        records.append(json.loads(line))
        if done(records[-1]):
            return records
        assert time.monotonic() < deadline, f"what the test waited for was not counted in {timeout} s: {records[-1]}"


def finish(proc: subprocess.Popen[str]) -> tuple[list[dict[str, Any]], str]:
    """SIGTERM (unless it ended already); then the rest of its records and its stderr. Read through the pipes'
    file objects, not communicate(): that reads the bare fds, and would skip what a readline() left in the
    file's buffer."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.wait(timeout=10)
    assert proc.returncode == 0, err
    return [json.loads(line) for line in out.strip().splitlines()], err


def start_json(tool: str, banner: str, *args: str) -> subprocess.Popen[str]:
    """`bpfscope TOOL --json ARGS`, returned once its first line on stderr, which starts with `banner`,
    says it runs."""
    proc = subprocess.Popen([*BPFSCOPE, tool, "--json", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stderr is not None
    first = proc.stderr.readline()
    if not first.startswith(banner):
        proc.kill()
        raise AssertionError(f"bpfscope {tool} did not start: {first}{proc.communicate(timeout=10)[1]}")
    return proc


def stop_json(proc: subprocess.Popen[str]) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    """SIGTERM; then the records before the final one, the final record and the rest of stderr."""
    records, err = finish(proc)
    assert records and records[-1]["final"] is True, err
    return records[:-1], records[-1], err
