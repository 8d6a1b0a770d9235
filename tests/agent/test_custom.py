"""Custom programs in the agent: each example of examples/agent/ built, loaded and attached through
CustomProgram, real packets, reads, signals and timers, and the metrics checked to the count; bad
metrics YAMLs each fail in one line naming the field, with nothing loaded or pinned."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pytest
import yaml

from bpfscope.agent.config import ConfigError, CustomConfig
from bpfscope.agent.containers import ContainerResolver
from bpfscope.agent.custom import Buckets, CustomProgram, LabelSpec, MetricSpec
from bpfscope.agent.custom.families import Exported
from bpfscope.agent.custom.labels import Kallsyms, Label, converter
from bpfscope.errors import BpfscopeError
from bpfscope.testing import packets as pk
from bpfscope.testing.netns import VethPair

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "agent"
Series = dict[tuple[str, ...], float]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One build cache for the module: each example compiles once."""
    return tmp_path_factory.mktemp("build-cache")


def example(name: str) -> CustomConfig:
    return CustomConfig(EXAMPLES / f"{name}.bpf.c", EXAMPLES / f"{name}.yaml")


def with_metrics(tmp_path: Path, obj: Path, document: Any, name: str = "metrics") -> CustomConfig:
    metrics = tmp_path / f"{name}.yaml"
    metrics.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
    return CustomConfig(obj, metrics)


@contextmanager
def opened(config: CustomConfig, pin_dir: Path, cache: Path, **kwargs: Any) -> Iterator[CustomProgram]:
    program = CustomProgram(config, str(pin_dir), cache_dir=cache, **kwargs)
    program.open()
    try:
        yield program
    finally:
        program.close()


def series(program: CustomProgram, sample: str) -> Series:
    """The samples named `sample` in one scrape: label values (in label order) → value."""
    return {tuple(s.labels.values()): s.value
            for family in program.collect() for s in family.samples if s.name == sample}


def wait_for(read: Callable[[], Series], done: Callable[[Series], bool], timeout: float = 5.0) -> Series:
    deadline = time.monotonic() + timeout
    while True:
        current = read()
        if done(current) or time.monotonic() > deadline:
            return current
        time.sleep(0.05)


def unique_comm(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"  # at most 15 characters: TASK_COMM_LEN less the NUL


# --- xdp_sources: by source address and protocol, IPv4 and IPv6 ---

# Sent from inside the namespace, so the frames arrive at the host end as ingress, where the XDP
# program is. They are addressed to a MAC nobody has: the stack drops them as PACKET_OTHERHOST.
SENDER = """
import json, sys
from bpfscope.testing.netns import send_frames
print(send_frames([bytes.fromhex(frame) for frame in json.load(sys.stdin)], sys.argv[1]))
"""


def test_xdp_sources_counts_each_source_and_protocol(veth_pair: VethPair, bpffs_dir: Path, cache: Path,
                                                      tmp_path: Path) -> None:
    document = yaml.safe_load((EXAMPLES / "xdp_sources.yaml").read_text())
    document["attach"] = {"xdp": [veth_pair.host]}
    config = with_metrics(tmp_path, EXAMPLES / "xdp_sources.bpf.c", document)
    mac = dict(src_mac=veth_pair.peer_mac, dst_mac="02:00:00:00:00:99")
    to_v4 = dict(mac, dst_ip="192.0.2.200")
    gre = pk.ethernet(mac["dst_mac"], mac["src_mac"], pk.EtherType.IPV4,
                      pk.ipv4("198.51.100.9", "192.0.2.200", 47, b"\0" * 24))
    sent = {
        ("198.51.100.7", "udp"): [pk.udp_frame(**to_v4, src_ip="198.51.100.7", sport=1000 + i, dport=9,
                                               payload=b"u" * i) for i in range(7)],
        ("198.51.100.7", "icmp"): [pk.icmp_frame(**to_v4, src_ip="198.51.100.7", seq=i) for i in range(2)],
        ("198.51.100.8", "tcp"): [pk.tcp_frame(**to_v4, src_ip="198.51.100.8", sport=2000, dport=80)] * 3,
        ("2001:db8::5", "udp"): [pk.ipv6_udp_frame(**mac, src_ip="2001:db8::5", dst_ip="2001:db8::200",
                                                   sport=5000, dport=9, payload=b"6" * 10)] * 5,
        ("198.51.100.9", "47"): [gre],  # a protocol enum ip_protocol does not name: its number
    }
    frames = [frame.hex() for group in sent.values() for frame in group]
    with opened(config, bpffs_dir, cache) as program:
        assert series(program, "bpfscope_xdp_source_packets_total") == {}
        out = veth_pair.exec([sys.executable, "-c", SENDER, veth_pair.peer], input=json.dumps(frames),
                             capture_output=True, text=True, check=True)
        assert int(out.stdout) == len(frames)
        packets = wait_for(lambda: series(program, "bpfscope_xdp_source_packets_total"),
                           lambda got: sum(got.values()) >= len(frames))
        size = series(program, "bpfscope_xdp_source_bytes_total")
    assert packets == {key: len(group) for key, group in sent.items()}
    assert size == {key: sum(map(len, group)) for key, group in sent.items()}


# --- read_sizes: a log2 histogram by comm ---

# Renames itself, then makes exactly the reads asked for: nothing else reads under that comm.
READER = """
import ctypes, os, sys
libc = ctypes.CDLL(None)
fd = os.open("/dev/zero", os.O_RDONLY)
libc.prctl(15, sys.argv[1].encode())  # PR_SET_NAME
for size, times in ((1, 3), (0, 1), (100, 2), (4096, 5)):
    for _ in range(times):
        os.read(fd, size)
"""


def read_as(comm: str) -> None:
    subprocess.run([sys.executable, "-c", READER, comm], check=True)


def buckets_of(program: CustomProgram, comm: str) -> dict[str, float]:
    return {le: value for (c, le), value in series(program, "bpfscope_read_size_bytes_bucket").items() if c == comm}


def test_read_sizes_histogram_counts_each_read(bpffs_dir: Path, cache: Path) -> None:
    comm = unique_comm("bpfs-rd")
    with opened(example("read_sizes"), bpffs_dir, cache) as program:
        read_as(comm)
        buckets = buckets_of(program, comm)
        count = series(program, "bpfscope_read_size_bytes_count")[(comm,)]
        total = series(program, "bpfscope_read_size_bytes_sum")[(comm,)]
    # slot 0 holds 0 and 1 (le 1), slot 6 holds 64..127, slot 12 holds 4096..8191
    assert {le: buckets[le] for le in ("1.0", "3.0", "63.0", "127.0", "4095.0", "8191.0", "+Inf")} == {
        "1.0": 4, "3.0": 4, "63.0": 4, "127.0": 6, "4095.0": 6, "8191.0": 11, "+Inf": 11}
    values = list(buckets.values())
    assert values == sorted(values) and list(buckets)[-1] == "+Inf"  # cumulative, +Inf last
    assert (count, total) == (11, 3 * 1 + 2 * 100 + 5 * 4096)


def test_counts_carry_over_through_the_pins(bpffs_dir: Path, cache: Path) -> None:
    comm = unique_comm("bpfs-pin")
    with opened(example("read_sizes"), bpffs_dir, cache) as first:
        read_as(comm)
        assert buckets_of(first, comm)["+Inf"] == 11
    assert (bpffs_dir / "read_sizes" / "read_sizes").exists()  # pin_dir/<basename>/<map>, kept by close()
    with opened(example("read_sizes"), bpffs_dir, cache) as second:
        read_as(comm)
        assert buckets_of(second, comm)["+Inf"] == 22


# --- signals: by signal name and the receiver's cgroup path ---

CATCHER = """
import os, signal
for number in (signal.SIGUSR1, signal.SIGRTMIN + 1):
    signal.signal(number, lambda *_: os.write(1, b"."))
os.write(1, b"r")
while True:
    signal.pause()
"""


@pytest.fixture
def test_cgroup() -> Iterator[tuple[Path, str]]:
    """A fresh cgroup v2 directory and its path as the cgroup decoder shows it; removed after."""
    root = Path(ContainerResolver().cgroup_root)
    path = root / f"bpfscope-test-{secrets.token_hex(4)}"
    path.mkdir()
    try:
        yield path, "/" + path.name
    finally:
        path.rmdir()


def test_signals_by_name_and_receiving_cgroup(bpffs_dir: Path, cache: Path, test_cgroup: tuple[Path, str]) -> None:
    directory, cgroup = test_cgroup
    usr1, realtime = 6, 2
    child = subprocess.Popen([sys.executable, "-c", CATCHER], stdout=subprocess.PIPE)
    assert child.stdout is not None
    try:
        assert child.stdout.read(1) == b"r"
        (directory / "cgroup.procs").write_text(str(child.pid))
        with opened(example("signals"), bpffs_dir, cache) as program:
            for number, times in ((signal.SIGUSR1, usr1), (signal.SIGRTMIN + 1, realtime)):
                for _ in range(times):
                    os.kill(child.pid, number)
                    assert child.stdout.read(1) == b"."  # taken before the next is sent: none merge
            counts = series(program, "bpfscope_signals_delivered_total")
    finally:
        child.kill()
        child.wait()
    assert {key: value for key, value in counts.items() if key[1] == cgroup} == {
        ("SIGUSR1", cgroup): usr1, (str(int(signal.SIGRTMIN) + 1), cgroup): realtime}


# --- ksym: timer callbacks by name ---

KSYM_METRICS = {"counters": [{"name": "test_hrtimer_expiries_total", "help": "hrtimer expiries by callback",
                               "map": "expiries", "labels": [{"name": "function", "decoder": "ksym"}]}]}
NO_CAP_SYSLOG = ["setpriv", "--inh-caps=-syslog", "--bounding-set=-syslog"]


def test_ksym_names_hrtimer_callbacks(bpffs_dir: Path, cache: Path, tmp_path: Path,
                                      test_object: Callable[[str], Path]) -> None:
    config = with_metrics(tmp_path, test_object("hrtimer_functions"), KSYM_METRICS)
    with opened(config, bpffs_dir, cache) as program:
        for _ in range(20):
            time.sleep(0.005)  # clock_nanosleep: an hrtimer whose callback is hrtimer_wakeup
        counts = series(program, "test_hrtimer_expiries_total")
    with open("/proc/kallsyms") as f:
        symbols = {line.split()[2] for line in f}
    assert counts[("hrtimer_wakeup",)] >= 20
    assert all(name in symbols or name.startswith("0x") for (name,) in counts)


def test_ksym_without_cap_syslog_is_one_line_naming_it(bpffs_dir: Path, tmp_path: Path,
                                                       test_object: Callable[[str], Path]) -> None:
    """/proc/kallsyms shows a process without CAP_SYSLOG every address as 0: the agent's check and its start
    both stop on it, rather than export each address as a series of its own."""
    metrics = tmp_path / "hrtimer_functions.yaml"
    metrics.write_text(yaml.safe_dump(KSYM_METRICS))
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump({"listen": "127.0.0.1:0", "pin_dir": str(bpffs_dir / "agent"),
                                      "custom": [{"object": str(test_object("hrtimer_functions")),
                                                  "metrics": str(metrics)}]}))
    said = ("bpfscope agent: ksym labels: /proc/kallsyms shows every kernel address as 0 to this process: "
            "it needs CAP_SYSLOG (and kernel.kptr_restrict below 2)")
    for how in (["--check"], ["--duration", "1"]):
        result = subprocess.run([*NO_CAP_SYSLOG, sys.executable, "-m", "bpfscope.cli.main", "agent", "--config",
                                 str(config), *how], capture_output=True, text=True, timeout=60)
        assert (result.returncode, result.stderr.strip().splitlines()) == (1, [said]), result.stderr
        assert not list(bpffs_dir.glob("agent/*")), "nothing pinned"
    # With CAP_SYSLOG the same config passes its check.
    result = subprocess.run([sys.executable, "-m", "bpfscope.cli.main", "agent", "--config", str(config),
                             "--check"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_kallsyms_hidden_after_a_read_that_saw_them_keeps_that_read(tmp_path: Path) -> None:
    """The agent gives up CAP_SYSLOG once it has started: a reload reads zeros, and decodes with the symbols
    its start read."""
    kallsyms = tmp_path / "kallsyms"
    kallsyms.write_text("0000000000000000 T _stext\n0000000000000000 t hrtimer_wakeup\n")
    with pytest.raises(BpfscopeError, match=f"^ksym labels: {kallsyms} shows every kernel address as 0 .*CAP_SYSLOG"):
        Kallsyms.read(str(kallsyms))
    kallsyms.write_text("ffffffff81000000 T _stext\nffffffff81100000 t hrtimer_wakeup\n")
    seen = Kallsyms.read(str(kallsyms))
    kallsyms.write_text("0000000000000000 T _stext\n0000000000000000 t hrtimer_wakeup\n")
    assert Kallsyms.read(str(kallsyms)) is seen
    with pytest.raises(BpfscopeError, match="CAP_SYSLOG"):
        Kallsyms(str(kallsyms))  # read afresh, not through read()
    assert decode("ksym", np.array([0xFFFFFFFF81100010], dtype=np.uint64), kallsyms=seen) == ["hrtimer_wakeup"]


# --- every section the agent attaches ---

HOOKS_CHILD = """
import ctypes, os, sys
ctypes.CDLL(None).prctl(15, sys.argv[1].encode())
for _ in range(7):
    os.getpid()
for _ in range(5):
    os.getppid()
"""


def test_each_section_attaches_as_it_says(veth_pair: VethPair, bpffs_dir: Path, cache: Path, tmp_path: Path,
                                          test_object: Callable[[str], Path]) -> None:
    comm = unique_comm("bpfs-hk")
    labels = [{"name": "comm", "field": "comm"}, {"name": "hook", "field": "hook"}]
    document = {
        "counters": [
            {"name": "test_hits_total", "help": "Hits by comm and hook", "map": "hits", "labels": labels},
            {"name": "test_hook_hits_total", "help": "Hits by hook", "map": "hits", "labels": labels[1:]},
        ],
        "attach": {"tc_egress": [veth_pair.host], "perf_frequency": 200},
    }
    config = with_metrics(tmp_path, test_object("custom_hooks"), document)
    with opened(config, bpffs_dir, cache) as program:
        subprocess.run([sys.executable, "-c", HOOKS_CHILD, comm], check=True)
        veth_pair.send_udp(count=9)
        by_hook = wait_for(lambda: series(program, "test_hook_hits_total"),
                           lambda got: got.get(("HOOK_TC",), 0) >= 9 and got.get(("HOOK_PERF_EVENT",), 0) > 0)
        by_comm = {hook: value for (c, hook), value in series(program, "test_hits_total").items()
                   if c == comm and hook != "HOOK_PERF_EVENT"}  # the clock samples whatever runs, the child too
    assert by_comm == {"HOOK_TRACEPOINT": 5, "HOOK_UPROBE": 7, "HOOK_URETPROBE": 7}
    assert by_hook[("HOOK_TC",)] == 9  # summed over the comms left out of the labels
    assert by_hook[("HOOK_PERF_EVENT",)] > 0


# --- bad metrics YAMLs: one line naming the field, nothing loaded, nothing pinned ---

def read_sizes_metrics(**changes: Any) -> dict[str, Any]:
    histogram = {"name": "bpfscope_read_size_bytes", "help": "Sizes", "map": "read_sizes", "bucket_field": "slot",
                 "buckets": "log2", "value": "count", "sum_field": "bytes",
                 "labels": [{"name": "comm", "field": "comm", "decoder": "comm"}]}
    histogram.update(changes)
    return {"histograms": [histogram]}


def counter(**fields: Any) -> dict[str, Any]:
    """A counter over read_sizes; a field given as None is left out."""
    metric = {"name": "bpfscope_reads_total", "map": "read_sizes", "value": "count", **fields}
    return {"counters": [{key: value for key, value in metric.items() if value is not None}]}


BAD = [
    (counter(map="nosuch"), "counters[0].map: no map 'nosuch' in read_sizes", "(it has: read_sizes)"),
    (read_sizes_metrics(labels=[{"field": "pid"}]), "histograms[0].labels[0].field: struct size_key has no field "
     "'pid'", "(it has: comm, slot)"),
    (counter(value="total"), "counters[0].value: struct size_count has no field 'total'", "(it has: count, bytes)"),
    (counter(value=None), "counters[0].value: is required", "(fields: count, bytes)"),
    (counter(labels=[{"name": "comm", "field": "comm", "decoder": "ipv4"}]),
     "counters[0].labels[0].decoder: ipv4 needs a 4-byte field", "comm (char[16]) is not one"),
    (counter(labels=[{"field": "slot", "decoder": "enum"}]), "counters[0].labels[0].decoder: enum needs an enum",
     "slot (__u32)"),
    (counter(labels=[{"field": "comm", "decoder": "rot13"}]), "counters[0].labels[0].decoder: must be one of",
     "not 'rot13'"),
    (counter(name="bpfscope-reads_total"), "counters[0].name: 'bpfscope-reads_total' is not a Prometheus metric",
     ""),
    (counter(name="bpfscope_reads"), "counters[0].name: a counter's name ends with _total", ""),
    (counter(labels=[{"name": "x", "field": "comm"}, {"name": "x", "field": "slot"}]),
     "counters[0].labels[1].name: label 'x' is given twice", ""),
    (counter(labels=[{"name": "__x", "field": "comm"}]), "counters[0].labels[0].name: '__x' is not a Prometheus "
     "label name", ""),
    (read_sizes_metrics(buckets="cubic"), "histograms[0].buckets: must be log2, linear or fixed", ""),
    (read_sizes_metrics(buckets="linear"), "histograms[0].bucket_width: is required for linear buckets", ""),
    (read_sizes_metrics(buckets="fixed", bucket_bounds=[1, 10, 10]), "histograms[0].bucket_bounds: must increase",
     ""),
    (read_sizes_metrics(max_bucket=70), "histograms[0].max_bucket: log2 of a 64-bit value is at most 63", ""),
    (read_sizes_metrics(bucket_field="comm"), "histograms[0].bucket_field: comm is char[16], not an integer", ""),
    (read_sizes_metrics(labels=[{"field": "slot"}]), "histograms[0].labels[0].field: slot is the bucket_field", ""),
    (read_sizes_metrics(bucket="log2"), "histograms[0].bucket: unknown field", ""),
    ({**counter(), "attach": {"xdp": ["nosuch0"]}}, "attach.xdp[0]: no interface 'nosuch0'", ""),
    ({**counter(), "attach": {"xdp": ["lo"]}}, "attach.xdp: read_sizes has no SEC(\"xdp\") program", ""),
    ({"counters": []}, "no metrics: give counters, gauges or histograms", ""),
    ("counters: [name: x\n", "metrics.yaml:2: not valid YAML", ""),
]


def loaded_programs() -> str:
    return subprocess.run(["bpftool", "prog", "show"], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("document, expected, detail", BAD)
def test_bad_metrics_fail_in_one_line_with_nothing_loaded(document: Any, expected: str, detail: str, bpffs_dir: Path,
                                                          cache: Path, tmp_path: Path) -> None:
    config = with_metrics(tmp_path, EXAMPLES / "read_sizes.bpf.c", document)
    program = CustomProgram(config, str(bpffs_dir), cache_dir=cache)
    with pytest.raises(ConfigError) as caught:
        program.open()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(config.metrics)) and expected in message and detail in message, message
    assert "count_read_size" not in loaded_programs()
    assert not any(bpffs_dir.iterdir())
    program.close()  # harmless on a program that never opened


def test_a_section_the_agent_cannot_attach_is_named(bpffs_dir: Path, cache: Path, tmp_path: Path,
                                                    test_object: Callable[[str], Path]) -> None:
    document = {"counters": [{"name": "test_hits_total", "map": "hits"}]}
    config = with_metrics(tmp_path, test_object("attach_kinds"), document)
    with pytest.raises(ConfigError, match=r"program 'count_entry': SEC\('uprobe'\) names no function"):
        CustomProgram(config, str(bpffs_dir), cache_dir=cache).open()
    assert not any(bpffs_dir.iterdir())


def test_a_failed_attach_leaves_nothing_attached_or_pinned(bpffs_dir: Path, cache: Path, tmp_path: Path,
                                                           veth_pair: VethPair) -> None:
    document = yaml.safe_load((EXAMPLES / "xdp_sources.yaml").read_text())
    document["attach"] = {"xdp": [veth_pair.host], "xdp_mode": "native"}
    config = with_metrics(tmp_path, EXAMPLES / "xdp_sources.bpf.c", document)
    with opened(config, bpffs_dir, cache):
        with pytest.raises(OSError, match="another XDP program is attached there"):
            CustomProgram(config, str(bpffs_dir / "second"), cache_dir=cache).open()
        assert not (bpffs_dir / "second" / "xdp_sources").exists()
        assert loaded_programs().count("count_sources") == 1  # only the first one's
    assert "count_sources" not in loaded_programs()


# --- decoders and buckets on made-up batches ---

def decode(decoder: str, column: np.ndarray[Any, Any], *, enumerators: tuple[tuple[int, str], ...] = (),
           kallsyms: Optional[Kallsyms] = None) -> list[str]:
    label = LabelSpec("x", None, decoder, enumerators)
    texts, codes = Label(label, converter(label, kallsyms, None)).read(column)
    return [texts[c] for c in codes]


def test_decoders() -> None:
    be32 = np.frombuffer(bytes([192, 0, 2, 1, 10, 0, 0, 1]), dtype=np.uint32)  # __be32: network order in memory
    assert decode("ipv4", be32) == ["192.0.2.1", "10.0.0.1"]
    assert decode("ipv4", np.array([[198, 51, 100, 7]], dtype=np.uint8)) == ["198.51.100.7"]
    v6 = np.zeros((3, 16), dtype=np.uint8)
    v6[0] = list(bytes.fromhex("20010db8000000000000000000000001"))
    v6[1, 10:] = [0xFF, 0xFF, 192, 0, 2, 1]
    assert decode("ipv6", v6) == ["2001:db8::1", "192.0.2.1", "::"]
    assert decode("string", np.array([b"abc", b"abc\0junk", b"\xff"], dtype="S16")) == ["abc", "abc", "\\xff"]
    assert decode("int", np.array([-3, 7], dtype=np.int32)) == ["-3", "7"]
    assert decode("enum", np.array([1, 5], dtype=np.uint32), enumerators=((1, "ONE"),)) == ["ONE", "5"]
    kallsyms = Kallsyms()
    with open("/proc/kallsyms") as f:
        address, _, name = f.readline().split()[:3]
    assert decode("ksym", np.array([int(address, 16), 0x1000], dtype=np.uint64), kallsyms=kallsyms) == [
        name, "0x1000"]


def histogram(buckets: Buckets, slots: list[int], counts: list[int], multiplier: float = 1.0) -> dict[str, float]:
    spec = MetricSpec("histogram", "h", "", "m", None, (), multiplier, "slot", buckets)
    keys = np.array(slots, dtype=[("slot", np.uint32)])
    family = Exported(spec, []).family(keys, np.array(counts, dtype=np.uint64))
    return {s.labels["le"]: s.value for s in family.samples}


def test_bucket_bounds() -> None:
    assert histogram(Buckets("linear", width=10), [0, 2], [1, 4]) == {
        "9.0": 1, "19.0": 1, "29.0": 5, "+Inf": 5}
    assert histogram(Buckets("fixed", bounds=(0.5, 2.0)), [1, 2, 9], [1, 2, 3]) == {
        "0.5": 0, "2.0": 1, "+Inf": 6}
    assert histogram(Buckets("log2", max_bucket=2), [0, 2, 40], [1, 2, 3], multiplier=1e-3) == {
        "0.001": 1, "0.003": 1, "+Inf": 6}
