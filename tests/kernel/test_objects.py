"""Object lifecycle on the real kernel: open, configure, load, attach, close; verifier errors; fds."""

from __future__ import annotations

import errno
import os

import pytest

from bpfscope.errors import BpfscopeError, VerifierError
from bpfscope.object import ObjectSpec, load, tool_object
from bpfscope.program import XdpAction


def bpf_fds() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        count += any(kind in target for kind in ("bpf-map", "bpf-prog", "bpf_link", "btf", "perf_event"))
    return count


def test_spec_lists_programs_maps_and_config(test_object):
    spec = ObjectSpec.open(test_object("map_types"))
    assert set(spec.programs) == {"bump_counters"}
    assert {"flows", "recent", "per_cpu_flows", "per_cpu_small", "slots", "prefixes"} <= set(spec.maps)
    assert dict(spec.rodata) == {"cfg_increment": 1}
    spec.close()


def test_rodata_reaches_the_kernel_and_freezes_at_load(test_object):
    spec = ObjectSpec.open(test_object("map_types"))
    spec.rodata["cfg_increment"] = 7
    with spec.load() as obj:
        obj.programs["bump_counters"].test_run(bytes(64), repeat=3)
        assert sum(obj.maps["per_cpu_small"][0]) == 21
        with pytest.raises(BpfscopeError, match="frozen"):
            obj.rodata["cfg_increment"] = 1


def test_unknown_config_name_lists_the_known_ones(test_object):
    spec = ObjectSpec.open(test_object("map_types"))
    with pytest.raises(KeyError, match="cfg_increment"):
        spec.rodata["cfg_nope"] = 1
    spec.close()


def test_map_size_set_before_load(test_object):
    spec = ObjectSpec.open(test_object("map_types"))
    spec.maps["recent"].max_entries = 4096
    with spec.load() as obj:
        assert obj.maps["recent"].max_entries == 4096


def test_close_twice_is_harmless(test_object):
    obj = load(test_object("map_types"))
    obj.close()
    obj.close()
    assert obj.closed


def test_verifier_rejection_names_cause_and_source_line(test_object):
    with pytest.raises(VerifierError) as caught:
        load(test_object("verifier_reject"))
    err = caught.value
    assert err.errno == errno.EACCES
    assert err.program == "unchecked_lookup"
    assert "invalid mem access" in err.cause and "or_null" in err.cause
    assert "*count += 1" in err.source_line
    # kernels from 6.4 end the log's source lines with "@ file:line"; the error names the place then
    assert ("verifier_reject.bpf.c:" in err.source_line) is _log_has_locations(err.log)
    assert len(err.log) > 3 and err.tail(3) == list(err.log[-3:])
    assert "\n" not in str(err)


def test_missing_object_file_is_one_clear_error(tmp_path):
    with pytest.raises(BpfscopeError, match="no BPF object at"):
        ObjectSpec.open(tmp_path / "nope.bpf.o")


def test_not_an_object_file(tmp_path):
    junk = tmp_path / "junk.bpf.o"
    junk.write_bytes(b"not an ELF file")
    with pytest.raises(BpfscopeError, match="open BPF object"):
        ObjectSpec.open(junk)


def test_test_run_returns_action_data_and_duration():
    with load(tool_object("packets")) as obj:
        frame = bytes(range(60))
        result = obj.programs["count_packets"].test_run(frame, repeat=100)
        assert result.action is XdpAction.PASS
        assert result.data == frame
        assert result.duration_ns >= 0


def test_load_attach_close_100_times_leaks_no_fd(veth_pair):
    before = bpf_fds()
    for _ in range(100):
        with load(tool_object("packets")) as obj, obj.programs["count_packets"].attach_xdp(veth_pair.host):
            pass
    assert bpf_fds() == before


def test_a_pinned_map_keeps_its_counts_for_the_next_load(test_object, bpffs_dir):
    pin = os.path.join(bpffs_dir, "per_cpu_small")
    for run, expected in enumerate((3, 6)):
        spec = ObjectSpec.open(test_object("map_types"))
        assert spec.maps["per_cpu_small"].pin_to(pin) is (run == 1)  # the second load takes the first's map over
        with spec.load() as obj:
            obj.programs["bump_counters"].test_run(bytes(64), repeat=3)
            assert sum(obj.maps["per_cpu_small"][0]) == expected
    assert os.path.exists(pin)


def test_a_pin_that_no_longer_fits_is_replaced(test_object, bpffs_dir):
    pin = os.path.join(bpffs_dir, "per_cpu_small")
    spec = ObjectSpec.open(test_object("map_types"))
    spec.maps["per_cpu_small"].max_entries = 2
    spec.maps["per_cpu_small"].pin_to(pin)
    spec.load().close()
    spec = ObjectSpec.open(test_object("map_types"))
    assert spec.maps["per_cpu_small"].pin_to(pin) is False
    with spec.load() as obj:
        obj.programs["bump_counters"].test_run(bytes(64), repeat=1)
        assert sum(obj.maps["per_cpu_small"][0]) == 1


def _log_has_locations(log: tuple[str, ...]) -> bool:
    return any(line.startswith("; ") and " @ " in line for line in log)
