"""A program compiled by `bpfscope build` loads, gets its map types from its own BTF, and obeys its knob."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from completeness import assert_counted

from bpfscope.build import compile_object, find_clang
from bpfscope.errors import BpfscopeError
from bpfscope.object import ObjectSpec
from bpfscope.program import XdpAction
from bpfscope.testing.packets import udp_frame

FLOWS = r"""
#include "packet.bpf.h"

struct flow_key {
	__be32 saddr;
	__be16 dport;
	__u8 proto;
};

struct flow_tally {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct flow_key);
	__type(value, struct flow_tally);
} flows SEC(".maps");

const volatile __u32 cfg_min_bytes = 0;

SEC("xdp")
int count_flows(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct flow_key key = {};
	struct flow_tally *tally;
	struct packet_info info;
	__u64 bytes = end - data;

	if (bytes < cfg_min_bytes)
		return XDP_PASS;
	parse_packet(data, end, &info);
	if (info.l3 != L3_IPV4)
		return XDP_PASS;
	key.saddr = info.saddr.v4;
	key.dport = info.dport;
	key.proto = info.ip_proto;
	tally = bpf_map_lookup_elem(&flows, &key);
	if (tally) {
		__sync_fetch_and_add(&tally->packets, 1);
		__sync_fetch_and_add(&tally->bytes, bytes);
	} else {
		struct flow_tally first = { .packets = 1, .bytes = bytes };

		bpf_map_update_elem(&flows, &key, &first, BPF_NOEXIST);
	}
	return XDP_PASS;
}
"""

FRAME = udp_frame(src_mac="02:00:00:00:00:01", dst_mac="02:00:00:00:00:02", src_ip="10.1.2.3",
                  dst_ip="10.1.2.4", sport=40000, dport=5353, payload=b"x" * 32)


@pytest.fixture
def flows_object(tmp_path: Path) -> Path:
    try:
        find_clang()
    except BpfscopeError as exc:
        pytest.skip(str(exc))
    source = tmp_path / "flows.bpf.c"
    source.write_text(FLOWS)
    return compile_object(source)


def test_map_types_come_from_the_programs_btf(flows_object: Path) -> None:
    with ObjectSpec.open(flows_object).load() as obj:
        flows = obj.maps["flows"]
        assert flows.key.name == "struct flow_key"
        assert flows.value.name == "struct flow_tally"
        assert flows.key.dtype.names == ("saddr", "dport", "proto")
        assert flows.key.dtype.itemsize == 8  # padded as C pads it
        assert flows.value.dtype.names == ("packets", "bytes")

        result = obj.programs["count_flows"].test_run(FRAME, repeat=3)
        assert result.action == XdpAction.PASS
        keys, values = flows.lookup_batch()
        assert len(keys) == 1
        assert keys[0]["saddr"].tobytes() == bytes([10, 1, 2, 3])
        assert keys[0]["dport"].byteswap() == 5353
        assert keys[0]["proto"] == 17
        assert (values[0]["packets"], values[0]["bytes"]) == (3, 3 * len(FRAME))


def test_knob_is_enforced_in_the_kernel(flows_object: Path) -> None:
    spec = ObjectSpec.open(flows_object)
    spec.rodata["cfg_min_bytes"] = len(FRAME) + 1
    with spec.load() as obj:
        obj.programs["count_flows"].test_run(FRAME)
        assert len(obj.maps["flows"]) == 0


# Spelled as libbpf 1.2's headers spell it; bpfscope.bpf.h gives 1.1 the same.
UPROBES = r"""
#include "bpfscope.bpf.h"

const volatile __u32 cfg_tgid = 0;
__u64 calls = 0, returns = 0;

SEC("uprobe")
int BPF_UPROBE(enter_getppid)
{
	if (bpf_get_current_pid_tgid() >> 32 == cfg_tgid)
		__sync_fetch_and_add(&calls, 1);
	return 0;
}

SEC("uretprobe")
int BPF_URETPROBE(leave_getppid, long ret)
{
	if (bpf_get_current_pid_tgid() >> 32 == cfg_tgid && ret == getppid_result)
		__sync_fetch_and_add(&returns, 1);
	return 0;
}
"""


def test_uprobe_spellings_of_current_libbpf_load_and_count(tmp_path: Path) -> None:
    try:
        find_clang()
    except BpfscopeError as exc:
        pytest.skip(str(exc))
    source = tmp_path / "uprobes.bpf.c"
    source.write_text(UPROBES.replace("getppid_result", str(os.getppid())))
    spec = ObjectSpec.open(compile_object(source))
    spec.rodata["cfg_tgid"] = os.getpid()
    with spec.load() as obj:
        with obj.programs["enter_getppid"].attach_uprobe("libc", "getppid"), \
             obj.programs["leave_getppid"].attach_uprobe("libc", "getppid", retprobe=True):
            for _ in range(50):
                os.getppid()
        counts = obj.bss
        # each call, but for runs the kernel skipped (another BPF program was running on that CPU)
        assert_counted(counts["calls"], 50, missed=obj.programs["enter_getppid"].missed_runs)
        assert_counted(counts["returns"], 50, missed=obj.programs["leave_getppid"].missed_runs)
