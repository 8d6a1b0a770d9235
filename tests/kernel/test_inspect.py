"""`bpfscope inspect` against bpftool on the real kernel: the test loads and attaches its own objects (XDP
on a veth, tcx (clsact before Linux 6.6) and clsact, a tracepoint, a uprobe), pins a map and a link, and
each view must agree with `bpftool -j` about the same ids. Only the test's own ids are compared: other
runs may have objects loaded."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bpfscope import _libbpf
from bpfscope import inspect as ins
from bpfscope.errors import SyscallError
from bpfscope.features import Feature, probe
from bpfscope.link import Link
from bpfscope.object import Object, ObjectSpec, load, tool_object
from bpfscope.program import TcDirection, TcMode, XdpMode

BPFSCOPE = [sys.executable, "-m", "bpfscope.cli.main"]
FLOWS = 10_000  # more than two batches of ins.DEFAULT_CHUNK


def bpfscope(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, *BPFSCOPE, *args], capture_output=True, text=True, timeout=60, check=False)


def inspect_json(*args: str) -> list[dict[str, Any]]:
    result = bpfscope("inspect", *args, "--json")
    assert result.returncode == 0 and not result.stderr, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def bpftool(*args: str) -> Any:
    return json.loads(subprocess.run(["bpftool", "-j", *args], capture_output=True, text=True, check=True).stdout)


def object_id(fd: int) -> int:
    """The kernel id of a program, map or link: the second u32 of each of their info structs."""
    info = (ctypes.c_uint32 * 2)()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    _libbpf.check(_libbpf.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), "info")
    return int(info[1])


def canonical(entries: list[Any]) -> list[str]:
    return sorted(json.dumps(entry, sort_keys=True) for entry in entries)


@dataclass
class World:
    iface: str
    ingress: str  # the hook count_tc holds on ingress: "tcx/ingress", or "clsact/ingress" before Linux 6.6
    pins: Path
    progs: dict[str, int]
    maps: dict[str, int]
    links: dict[str, int]  # BPF links only: before Linux 5.15 a tracepoint or uprobe is held by its perf event

    @property
    def perf_links(self) -> bool:
        return "tracepoint" in self.links


def link_id(link: Link) -> int | None:
    """The BPF link id behind a Link, or None where there is none (a perf event fd, before 5.15)."""
    try:
        return object_id(link.fd)
    except SyscallError:
        return None


def flow(i: int) -> tuple[dict[str, int], dict[str, Any]]:
    return ({"saddr": i, "sport": i % 65536, "proto": 6},
            {"packets": i, "bytes": 2 * i, "comm": b"curl", "state": 2, "delta": -i})


@pytest.fixture
def world(test_object, veth_pair, bpffs_dir) -> Iterator[World]:
    spec = ObjectSpec.open(test_object("attach_kinds"))
    spec.rodata["cfg_tgid"] = os.getpid()
    with spec.load() as kinds, load(test_object("map_types")) as types:
        links: dict[str, Link] = {
            "tracepoint": kinds.programs["count_getppid"].attach_tracepoint("syscalls", "sys_enter_getppid"),
            "uprobe": kinds.programs["count_entry"].attach_uprobe("libc", "getppid"),
            "xdp": types.programs["bump_counters"].attach_xdp(veth_pair.host, mode=XdpMode.GENERIC),
        }
        has_tcx = probe(Feature.TCX) is None
        ingress = kinds.programs["count_tc"].attach_tc(veth_pair.host, mode=TcMode.TCX if has_tcx else TcMode.CLSACT)
        if has_tcx:
            links["tcx"] = ingress
        clsact = kinds.programs["count_tc"].attach_tc(veth_pair.host, direction=TcDirection.EGRESS,
                                                      mode=TcMode.CLSACT)
        try:
            keys, values = zip(*(flow(i) for i in range(FLOWS)))
            types.maps["flows"].update_batch(list(keys), list(values))
            for i in range(3):
                types.maps["recent"][i] = 10 * i
            types.maps["per_cpu_flows"][7] = {"packets": 1, "bytes": 60, "comm": b"ping", "state": 1, "delta": 0}
            types.maps["prefixes"][{"prefixlen": 24, "addr": (10, 0, 0, 0)}] = 1
            types.maps["flows"].pin(str(bpffs_dir / "flows"))
            links["xdp"].pin(str(bpffs_dir / "xdp_link"))
            yield World(
                iface=veth_pair.host, ingress="tcx/ingress" if has_tcx else "clsact/ingress", pins=bpffs_dir,
                progs={name: object_id(p.fd) for obj in (kinds, types) for name, p in obj.programs.items()},
                maps={name: object_id(m.fd) for obj in (kinds, types) for name, m in obj.maps.items()},
                links={name: i for name, i in ((name, link_id(link)) for name, link in links.items()) if i},
            )
        finally:
            clsact.close()
            ingress.close()
            for link in links.values():
                link.close()


# --- programs ---


def test_progs_agree_with_bpftool(world: World) -> None:
    ids = sorted(world.progs.values())
    ours = {p["id"]: p for p in inspect_json("progs", *map(str, ids))}
    assert sorted(ours) == ids
    for prog_id, p in ours.items():
        theirs = bpftool("prog", "show", "id", str(prog_id))
        for key in ("id", "name", "type", "tag", "uid", "bytes_xlated", "bytes_jited", "btf_id"):
            assert p[key] == theirs[key], key
        assert p["memlock"] == theirs["bytes_memlock"]
        assert sorted(p["map_ids"]) == sorted(theirs["map_ids"])
        assert abs(p["loaded_at"] - theirs["loaded_at"]) <= 1
        # counted from Linux 5.16 (None before): a kernel with bpf_loop (5.17) counts them
        counted = p["verified_insns"] is not None and p["verified_insns"] > 0
        assert counted or (p["verified_insns"] is None and probe(Feature.BPF_LOOP) is not None)
        assert os.getpid() in [h["pid"] for h in p["pids"]]  # this test holds every fd


# bpf_link_info describes a tracepoint's or a uprobe's perf_event link from Linux 6.6, as tcx came.
def perf_links_described() -> bool:
    return probe(Feature.TCX) is None


def test_progs_say_where_each_is_attached(world: World) -> None:
    attached = {p["name"]: p["attached"] for p in inspect_json("progs", *map(str, world.progs.values()))}
    assert attached["bump_counters"] == [f"xdp on {world.iface}"]
    hooks = sorted(["clsact/egress", world.ingress])
    assert sorted(attached["count_tc"]) == [f"{hook} on {world.iface}" for hook in hooks]
    if not world.perf_links:  # before 5.15: nothing but a perf event holds them, and inspect sees links
        assert attached["count_getppid"] == attached["count_entry"] == []
    elif perf_links_described():
        assert attached["count_getppid"] == ["tracepoint sys_enter_getppid"]
        (uprobe,) = attached["count_entry"]
        assert uprobe.startswith("uprobe /") and "libc.so" in uprobe
    else:
        undescribed = ["perf_event (its kernel describes these from Linux 6.6)"]
        assert attached["count_getppid"] == attached["count_entry"] == undescribed
    assert attached["count_return"] == [] and attached["count_tick"] == []


def test_run_count_and_time_with_bpf_stats(test_object) -> None:
    with load(test_object("map_types")) as obj:
        prog = obj.programs["bump_counters"]
        prog_id = str(object_id(prog.fd))
        before = inspect_json("progs", prog_id)[0]
        stats = _libbpf.check(_libbpf.bpf_enable_stats(0), "enable stats")  # BPF_STATS_RUN_TIME, while open
        try:
            prog.test_run(bytes(64), repeat=100)
            (p,) = inspect_json("progs", prog_id)
            theirs = bpftool("prog", "show", "id", prog_id)
        finally:
            os.close(stats)
    if not _libbpf_stats_sysctl():
        assert before["run_cnt"] is None and before["run_time_ns"] is None  # off, nothing counted yet
    assert p["run_cnt"] == 100 == theirs["run_cnt"]
    assert p["run_time_ns"] == theirs["run_time_ns"] > 0


def _libbpf_stats_sysctl() -> bool:
    return Path("/proc/sys/kernel/bpf_stats_enabled").read_text().strip() == "1"


# --- maps ---


def test_maps_agree_with_bpftool(world: World) -> None:
    ids = sorted(world.maps.values())
    ours = {m["id"]: m for m in inspect_json("maps", *map(str, ids))}
    assert sorted(ours) == ids
    for map_id, m in ours.items():
        theirs = bpftool("map", "show", "id", str(map_id))
        for key in ("id", "name", "type", "flags", "max_entries", "btf_id"):
            assert m[key] == theirs[key], key
        assert (m["key_size"], m["value_size"]) == (theirs["bytes_key"], theirs["bytes_value"])
        assert m["memlock"] == theirs["bytes_memlock"]
        assert m["frozen"] == bool(theirs["frozen"])
        assert os.getpid() in [h["pid"] for h in m["pids"]]


def test_maps_types_from_btf_and_entries(world: World) -> None:
    ours = {m["name"]: m for m in inspect_json("maps", *map(str, world.maps.values()))}
    assert (ours["flows"]["key_type"], ours["flows"]["value_type"]) == ("struct test_flow_key", "struct flow_counters")
    assert (ours["recent"]["key_type"], ours["recent"]["value_type"]) == ("__u32", "__u64")
    assert ours["prefixes"]["key_type"] == "struct lpm_v4_key"
    # hash maps are counted, as many as bpftool dumps; arrays and tries are not
    for name, count in (("flows", FLOWS), ("recent", 3), ("per_cpu_flows", 1)):
        assert ours[name]["entries"] == count == len(bpftool("map", "dump", "id", str(world.maps[name]))), name
    assert ours["slots"]["entries"] is None and ours["prefixes"]["entries"] is None


def test_map_dump_matches_bpftool_formatted(world: World) -> None:
    for name in ("flows", "per_cpu_flows", "per_cpu_small", "slots", "prefixes", "recent"):
        map_id = str(world.maps[name])
        theirs = [entry["formatted"] for entry in bpftool("map", "dump", "id", map_id)]
        assert canonical(inspect_json("map", map_id)) == canonical(theirs), name
    flows = inspect_json("map", str(world.maps["flows"]))
    assert len(flows) == FLOWS
    value = {"packets": 5, "bytes": 10, "comm": "curl", "state": "TEST_FLOW_ESTABLISHED", "delta": -5}
    assert {"key": {"saddr": 5, "sport": 5, "proto": 6}, "value": value} in flows


def test_map_dump_by_pin_and_with_limit(world: World) -> None:
    by_id = canonical(inspect_json("map", str(world.maps["flows"])))
    assert canonical(inspect_json("map", str(world.pins / "flows"))) == by_id
    limited = inspect_json("map", str(world.maps["flows"]), "--limit", "5000")  # across two batches
    assert len(limited) == 5000 and set(canonical(limited)) <= set(by_id)
    text = bpfscope("inspect", "map", str(world.maps["flows"]), "--limit", "3")
    assert text.returncode == 0
    lines = text.stdout.splitlines()
    assert lines[0].startswith("map flows") and "struct test_flow_key → struct flow_counters" in lines[0]
    assert len(lines) == 5 and lines[-1] == "3 entries (--limit 3)"
    assert all(" → packets=" in line for line in lines[1:4])


def test_map_entries_read_in_batches_and_stop_at_the_limit(world: World, monkeypatch) -> None:
    calls = []
    lookup_batch = _libbpf.bpf_map_lookup_batch

    def counted(*args: Any) -> int:
        calls.append(args[5]._obj.value)  # how many entries the call was given room for
        return int(lookup_batch(*args))

    monkeypatch.setattr(_libbpf, "bpf_map_lookup_batch", counted)
    with ins.open_map(str(world.maps["flows"])) as flows:
        assert len(list(ins.map_entries(flows, chunk=1024))) == FLOWS
        assert len(calls) >= FLOWS // 1024 and set(calls) == {1024}
        calls.clear()
        assert len(list(ins.map_entries(flows, chunk=1024, limit=1500))) == 1500
        assert len(calls) == 2  # the limit stops the reading, not only the printing


# --- links, pins, net ---


def test_links_agree_with_bpftool(world: World) -> None:
    ours = {link["id"]: link for link in inspect_json("links", *map(str, world.links.values()))}
    assert sorted(ours) == sorted(world.links.values())
    for link_id, link in ours.items():
        theirs = bpftool("link", "show", "id", str(link_id))
        assert link["prog_id"] == theirs["prog_id"]
        assert link["type"] == theirs["type"] or (link["type"], theirs["type"]) == ("tcx", 11)  # bpftool 7.1
        assert os.getpid() in [h["pid"] for h in link["pids"]]
    xdp = ours[world.links["xdp"]]
    assert xdp["ifindex"] == socket.if_nametoindex(world.iface)  # bpftool 7.1 shows no ifindex
    assert (xdp["ifname"], xdp["target"]) == (world.iface, f"xdp on {world.iface}")
    if "tcx" in world.links:
        tcx = ours[world.links["tcx"]]
        assert tcx["ifindex"] == xdp["ifindex"]
        assert (tcx["attach_type"], tcx["target"]) == ("tcx_ingress", f"tcx/ingress on {world.iface}")
    if not world.perf_links:
        return
    tracepoint, uprobe = ours[world.links["tracepoint"]], ours[world.links["uprobe"]]
    if perf_links_described():
        assert (tracepoint["perf_type"], tracepoint["tp_name"]) == ("tracepoint", "sys_enter_getppid")
        assert uprobe["perf_type"] == "uprobe" and "libc.so" in uprobe["path"] and uprobe["offset"] > 0
    else:
        assert tracepoint["perf_type"] is None and uprobe["perf_type"] is None
    assert uprobe["prog_id"] == world.progs["count_entry"]


def test_pins_say_what_each_pin_is(world: World) -> None:
    ours = {Path(pin["path"]).name: pin for pin in inspect_json("pins", str(world.pins))}
    assert sorted(ours) == ["flows", "xdp_link"]
    flows, link = ours["flows"], ours["xdp_link"]
    assert (flows["kind"], flows["type"], flows["name"]) == ("map", "hash", "flows")
    assert flows["id"] == world.maps["flows"] == bpftool("map", "show", "pinned", flows["path"])["id"]
    assert (link["kind"], link["type"], link["name"]) == ("link", "xdp", "bump_counters")
    assert link["id"] == world.links["xdp"] == bpftool("link", "show", "pinned", link["path"])["id"]
    assert link["target"] == f"xdp on {world.iface}"
    tree = bpfscope("inspect", "pins", str(world.pins))
    assert tree.returncode == 0 and f"flows  map {flows['id']} hash flows" in tree.stdout


def test_net_agrees_with_bpftool(world: World) -> None:
    ours = {net["hook"]: net for net in inspect_json("net", world.iface)}
    assert sorted(ours) == sorted(["clsact/egress", world.ingress, "xdp"])
    (theirs,) = bpftool("net", "show", "dev", world.iface)
    (xdp,) = theirs["xdp"]
    assert (ours["xdp"]["prog_id"], ours["xdp"]["mode"]) == (xdp["id"], xdp["mode"]) == (
        world.progs["bump_counters"], "generic")
    assert ours["xdp"]["link_id"] == world.links["xdp"] and ours["xdp"]["ifindex"] == xdp["ifindex"]
    clsact_hooks = [hook for hook in ours if hook.startswith("clsact/")]
    for hook in clsact_hooks:
        (tc,) = [t for t in theirs["tc"] if t["kind"] == hook]
        assert ours[hook]["prog_id"] == tc["id"] == world.progs["count_tc"]
        assert ours[hook]["link_id"] is None and ours[hook]["priority"] is not None
    if "tcx" in world.links:  # bpftool 7.1 predates tcx: the link is the witness
        assert (ours["tcx/ingress"]["prog_id"], ours["tcx/ingress"]["link_id"]) == (
            world.progs["count_tc"], world.links["tcx"])
    assert {net["prog_name"] for net in ours.values()} == {"bump_counters", "count_tc"}


# --- verify ---


def loaded_programs() -> str:
    return subprocess.run(["bpftool", "prog", "show"], capture_output=True, text=True, check=True).stdout


def test_verify_rejected_names_the_failing_line(test_object) -> None:
    result = bpfscope("inspect", "verify", str(test_object("verifier_reject")))
    assert result.returncode == 1 and "Traceback" not in result.stderr and not result.stdout
    first, *tail = result.stderr.splitlines()
    assert "verifier rejected program 'unchecked_lookup'" in first
    assert "invalid mem access" in first and "*count += 1" in first
    assert 0 < len(tail) <= 20 and tail[-1].startswith("processed")
    assert "unchecked_lookup" not in loaded_programs()
    whole = bpfscope("inspect", "verify", str(test_object("verifier_reject")), "--log")
    assert whole.returncode == 1 and len(whole.stderr.splitlines()) >= len(result.stderr.splitlines())
    as_json = bpfscope("inspect", "verify", str(test_object("verifier_reject")), "--json")
    (verdict,) = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert as_json.returncode == 1 and len(as_json.stderr.splitlines()) == 1
    assert (verdict["accepted"], verdict["program"]) == (False, "unchecked_lookup")
    assert "*count += 1" in verdict["source_line"] and verdict["log"][-1].startswith("processed")
    # kernels from 6.4 end the log's source lines with "@ file:line"; the first line names the place then
    located = any(line.startswith("; ") and " @ " in line for line in whole.stderr.splitlines())
    assert ("verifier_reject.bpf.c:" in first) is located and verdict["source_line"] in first


def test_verify_accepted(test_object) -> None:
    result = bpfscope("inspect", "verify", str(test_object("map_types")))
    assert result.returncode == 0 and not result.stderr
    assert result.stdout.startswith("map_types.bpf.o: accepted: 1 program, 7 maps") and "bump_counters" in result.stdout
    (verdict,) = inspect_json("verify", str(test_object("map_types")))
    assert (verdict["accepted"], verdict["name"], verdict["type"]) == (True, "bump_counters", "xdp")
    assert verdict["log"] == []
    assert verdict["verified_insns"] is None or verdict["verified_insns"] > 0  # counted from 5.16
    logged = inspect_json("verify", str(test_object("map_types")), "--log")[0]["log"]
    assert any("bump_counters" in line for line in logged) and logged[-1].startswith("processed")


# --- errors ---


def assert_one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("bpfscope inspect: ")
    for text in expected:
        assert text in line


def test_unknown_ids_and_pins_are_one_line(tmp_path) -> None:
    assert_one_line_error(bpfscope("inspect", "map", "4294967295"), "no map with id 4294967295")
    assert_one_line_error(bpfscope("inspect", "progs", "4294967295"), "no program with id 4294967295")
    assert_one_line_error(bpfscope("inspect", "map", str(tmp_path / "nothing")), "no pin at")
    assert_one_line_error(bpfscope("inspect", "pins", str(tmp_path)), "not on a bpffs")


def test_a_map_ref_that_is_a_link(world: World) -> None:
    assert_one_line_error(bpfscope("inspect", "map", str(world.pins / "xdp_link")), "is a link, not a map")


@pytest.mark.parametrize("view", ["progs", "maps", "links", "map 1"])
def test_without_privileges_names_the_capability(view: str) -> None:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed, so capabilities cannot be dropped")
    drop_all = (setpriv, "--bounding-set", "-all", "--inh-caps", "-all", "--")
    assert_one_line_error(bpfscope("inspect", *view.split(), prefix=drop_all), "needs root or CAP_SYS_ADMIN")


def test_loaded_object_is_seen_by_the_library(test_object) -> None:
    """The library API, not only the command: the same views as Python values."""
    obj: Object
    with load(test_object("map_types")) as obj:
        prog_id, map_id = object_id(obj.programs["bump_counters"].fd), object_id(obj.maps["slots"].fd)
        (prog,) = ins.programs([prog_id])
        (slots,) = ins.maps([map_id])
        assert (prog.name, prog.type, prog.attached) == ("bump_counters", "xdp", ())
        assert (slots.name, slots.key_type, slots.value_type, slots.max_entries) == ("slots", "__u32", "__u64", 8)
        obj.maps["slots"][3] = 33
        with ins.open_map(str(map_id)) as m:
            assert list(ins.map_entries(m, limit=5)) == [{"key": i, "value": 33 if i == 3 else 0} for i in range(5)]


def test_long_program_names_come_whole_from_btf() -> None:
    """The kernel keeps 15 characters of a name; the program's BTF has all of it, as bpftool shows."""
    with load(tool_object("httptrace")) as obj:
        ids = {object_id(p.fd): p.name for p in obj.programs.values() if len(p.name) > 15}
        assert ids, "httptrace has no program with a long name any more: pick another object"
        for p in ins.programs(list(ids)):
            assert p.name == ids[p.id] == bpftool("prog", "show", "id", str(p.id))["name"]
