"""Every example of docs/library.md runs on the real kernel and prints what it should: each program of
docs/library/ is compiled afresh into a copy of the folder (as `bpfscope build` compiles it), each script is
run as a reader would run it, with the trigger it makes itself or the traffic the test sends, and its output
is compared. Kinds this kernel lacks skip with the probe's reason."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import pytest

from bpfscope._attach import probes
from bpfscope.build import compile_object
from bpfscope.errors import NotSupportedError
from bpfscope.features import Feature, probe

LIBRARY = Path(__file__).resolve().parents[2] / "docs" / "library"


_OBJECT = re.compile(r'with_name\("(\w+\.bpf)\.o"\)')


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of docs/library, where `script()` compiles what a script loads."""
    folder = tmp_path_factory.mktemp("library")
    shutil.copytree(LIBRARY, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.o"))
    return folder


def script(examples: Path, name: str) -> str:
    """The path of example `name`, with the object it loads compiled beside it."""
    path = examples / name
    (program,) = set(_OBJECT.findall(path.read_text()))
    if not (examples / f"{program}.o").exists():
        compile_object(examples / f"{program}.c")
    return str(path)


def run(examples: Path, name: str, *args: str) -> str:
    result = subprocess.run([sys.executable, script(examples, name), *args], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def skip_if_missing(missing: Optional[NotSupportedError]) -> None:
    if missing is not None:
        pytest.skip(str(missing))


# Scripts that make their own trigger, and the whole of what each prints.
SELF_CONTAINED = {
    "lifecycle.py": "getppid calls: 10\n",
    "pins.py": "getppid calls after close: 3\n",
    "sections.py": 'exec_tracepoint: SEC("tracepoint/sched/sched_process_exec") autoattaches=True\n'
                   'exec_raw_tp: SEC("raw_tp/sched_process_exec") autoattaches=True\n'
                   'exec_tp_btf: SEC("tp_btf/sched_process_exec") autoattaches=True\n'
                   "tracepoint_execs: 3\nraw_tp_execs: 3\ntp_btf_execs: 3\n",
    "maps.py": "calls per thread: [10, 20, 30]\nthread_calls(calls=10)\ntotal over CPUs: 60\nthreads left: 2\n",
    "ringbuf.py": "5 events, seq [0, 1, 2, 3, 4]\nevent 5 from this thread\n",
    "perfbuf.py": "5 events, seq [0, 1, 2, 3, 4] lost 0\n",
    "globals.py": "total: 21 mapped: True\nlast caller is this thread: True\nrodata: True\n",
    "tail_calls.py": "slot 0: DROP\nslot 1: PASS\nslot 2: ABORTED\n",
    "socket_filter.py": "datagrams seen: 5\n",
    "cgroup.py": "sockets made: 4\n",
    "uprobe.py": "getpid calls: 7\nit returned this pid: True\n",
    "iterator.py": "threads: 3 as /proc has them: True\n",
}
NEEDS: dict[str, Callable[[], Optional[NotSupportedError]]] = {
    "uprobe.py": lambda: probe(Feature.UPROBES),
}


@pytest.mark.parametrize("script", sorted(SELF_CONTAINED))
def test_example_prints_what_the_docs_say(examples, script):
    skip_if_missing(NEEDS.get(script, lambda: None)())
    out = run(examples, script)
    if script == "iterator.py":  # libraries may start threads of their own (numpy's BLAS): any number of them
        out = re.sub(r"threads: \d+", "threads: 3", out)
    assert out == SELF_CONTAINED[script]


def test_perf_event_samples_this_process_at_its_frequency(examples):
    skip_if_missing(probe(Feature.PERF_EVENTS))
    samples = int(run(examples, "perf_event.py").rpartition(":")[2])
    assert 150 <= samples <= 250  # 1000 a second of 0.2 s on a CPU


def test_usdt_counts_the_collections_of_this_python(examples):
    if b"stapsdt" not in Path(os.path.realpath(sys.executable)).read_bytes():
        pytest.skip(f"{sys.executable} has no USDT probes (a Python built without --with-dtrace)")
    assert run(examples, "usdt.py") == "collections: 3 last generation: 2\n"


@pytest.mark.parametrize(("kind", "missing"), [
    ("kprobe", lambda: probe(Feature.KPROBES)),
    ("fentry", lambda: probe(Feature.FENTRY)),
    ("lsm", probes.bpf_lsm),
])
def test_kernel_hooks_count_the_opens(examples, kind, missing):
    skip_if_missing(missing())
    assert run(examples, "kernel_hooks.py", kind) == "opens: 5\n"


def counting(examples: Path, name: str, iface: str, send: Callable[[], None],
             popen: Callable[..., subprocess.Popen[str]] = subprocess.Popen) -> str:
    """Runs an example that counts on `iface` until Enter; `send()` once it has attached; what it printed."""
    proc = popen([sys.executable, script(examples, name), iface], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    ready = proc.stdout.readline()
    assert ready.startswith(f"counting on {iface}"), proc.communicate(timeout=30)
    send()
    out, err = proc.communicate("\n", timeout=60)
    assert proc.returncode == 0, err
    return ready + out


def test_xdp_counts_the_frames_the_interface_receives(examples, veth_pair):
    # Run inside the namespace, on the peer end, which receives what the host end sends.
    out = counting(examples, "xdp.py", veth_pair.peer, lambda: veth_pair.send_udp(count=20), popen=veth_pair.popen)
    assert out.endswith("frames received: 20\n"), out


def test_tc_counts_the_packets_the_interface_sends(examples, veth_pair):
    out = counting(examples, "tc.py", veth_pair.host, lambda: veth_pair.send_udp(count=20))
    assert out.endswith("packets sent: 20\n"), out
