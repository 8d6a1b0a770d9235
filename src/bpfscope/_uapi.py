"""The kernel's numbers, each defined once, under the header that defines it (include/uapi/linux/ unless
said otherwise). Public enums among them (MapType, ProgramType, UpdateFlags, XdpAction) are re-exported
by maps and program; the rest stay private to bpfscope. No imports beyond the standard library: doctor
and the feature probes read these without loading numpy."""

from __future__ import annotations

import enum
import platform

# --- bpf.h ---


class MapType(enum.IntEnum):
    """enum bpf_map_type."""

    UNSPEC = 0
    HASH = 1
    ARRAY = 2
    PROG_ARRAY = 3
    PERF_EVENT_ARRAY = 4
    PERCPU_HASH = 5
    PERCPU_ARRAY = 6
    STACK_TRACE = 7
    CGROUP_ARRAY = 8
    LRU_HASH = 9
    LRU_PERCPU_HASH = 10
    LPM_TRIE = 11
    ARRAY_OF_MAPS = 12
    HASH_OF_MAPS = 13
    QUEUE = 22
    STACK = 23
    RINGBUF = 27


class ProgramType(enum.IntEnum):
    """enum bpf_prog_type, as far as bpfscope loads or probes them."""

    UNSPEC = 0
    SOCKET_FILTER = 1
    KPROBE = 2  # also uprobes
    SCHED_CLS = 3
    SCHED_ACT = 4
    TRACEPOINT = 5
    XDP = 6
    PERF_EVENT = 7
    RAW_TRACEPOINT = 17
    TRACING = 26


class AttachType(enum.IntEnum):
    """enum bpf_attach_type, as far as bpfscope attaches or probes them."""

    TRACE_FENTRY = 24
    XDP = 37
    TCX_INGRESS = 46
    TCX_EGRESS = 47


class UpdateFlags(enum.IntFlag):
    """BPF_ANY, BPF_NOEXIST, BPF_EXIST: the flags of a map update."""

    ANY = 0
    NOEXIST = 1
    EXIST = 2


class XdpAction(enum.IntEnum):
    """enum xdp_action: what an XDP program returns."""

    ABORTED = 0
    DROP = 1
    PASS = 2
    TX = 3
    REDIRECT = 4


class PerfEventLinkType(enum.IntEnum):
    """enum bpf_perf_event_type: what a perf_event link's info says it is attached to (Linux 6.6+)."""

    UPROBE = 1
    URETPROBE = 2
    KPROBE = 3
    KRETPROBE = 4
    TRACEPOINT = 5
    EVENT = 6


BPF_PROG_QUERY = 16  # enum bpf_cmd
TCX_PASS = 0  # enum tcx_action_base: TCX_NEXT is -1, TCX_PASS 0
BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1  # BPF_PROG_TEST_RUN's flags
BPF_OBJ_NAME_LEN = 16  # names the kernel keeps are cut to 15 characters and a NUL
BPF_FUNC_GET_CURRENT_TASK_BTF = 158  # enum bpf_func_id
BPF_FUNC_TASK_PT_REGS = 175
BPF_FUNC_LOOP = 181
BPF_PSEUDO_FUNC = 4  # src_reg of a ld_imm64 that loads a subprogram's address (a callback)
BPF_RB_NO_WAKEUP = 1  # bpf_ringbuf_output's flags
BPF_RINGBUF_BUSY_BIT = 1 << 31  # in a ring buffer record's header
BPF_RINGBUF_DISCARD_BIT = 1 << 30
BPF_RINGBUF_HDR_SZ = 8
BPF_STATS_RUN_TIME = 0  # enum bpf_stats_type

# --- not uapi ---

# include/linux/errno.h: the kernel-internal "not supported", which bpf() lets through for map
# operations some map types lack (batch lookups of an LPM trie).
ENOTSUPP = 524
# include/linux/bpf_verifier.h: BPF_LOG_LEVEL2, the verifier's log of every instruction and the state it
# reached (level 1 keeps only a rejected program's log).
BPF_LOG_LEVEL2 = 2
# tools/lib/bpf/libbpf.h: enum bpf_tc_attach_point, libbpf's own (the kernel has clsact parents instead).
BPF_TC_INGRESS = 1
BPF_TC_EGRESS = 2
# arch/*/include/asm/unistd.h (x86_64: syscall_64.tbl; aarch64: the generic asm-generic/unistd.h)
NR_BPF = {"x86_64": 321, "aarch64": 280}[platform.machine()]
NR_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}[platform.machine()]

# --- if_link.h ---


class XdpFlags(enum.IntFlag):
    """XDP_FLAGS_*: where an XDP program is attached."""

    SKB_MODE = 1 << 1
    DRV_MODE = 1 << 2


IFLA_EXT_MASK = 29  # attributes of a link message (struct ifinfomsg)
IFLA_XDP = 43
IFLA_XDP_PROG_ID = 4  # attributes nested in IFLA_XDP
IFLA_XDP_DRV_PROG_ID = 5
IFLA_XDP_SKB_PROG_ID = 6

# --- perf_event.h ---

PERF_TYPE_SOFTWARE = 1  # enum perf_type_id
PERF_COUNT_SW_CPU_CLOCK = 0  # enum perf_sw_ids
PERF_ATTR_SIZE_VER0 = 64  # the first struct perf_event_attr: the kernel takes any later size too
PERF_ATTR_FREQ = 1 << 10  # struct perf_event_attr's `freq` bit: sample_freq, not sample_period
PERF_FLAG_FD_CLOEXEC = 1 << 3

# --- route.h ---

RTF_UP = 0x0001
RTF_REJECT = 0x0200

# --- netlink.h ---

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x01
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
NLA_TYPE_MASK = 0x3FFF  # an attribute's type without NLA_F_NESTED and NLA_F_NET_BYTEORDER

# --- rtnetlink.h ---

RTM_GETLINK = 18
RTM_NEWTFILTER = 44
RTM_GETTFILTER = 46
RTEXT_FILTER_SKIP_STATS = 1 << 3
TCA_KIND = 1  # attributes of a tc message
TCA_OPTIONS = 2

# --- pkt_sched.h, pkt_cls.h ---

# TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS / TC_H_MIN_EGRESS): the parents of clsact's two filter lists.
TC_H_CLSACT_INGRESS = 0xFFFFFFF2
TC_H_CLSACT_EGRESS = 0xFFFFFFF3
TCA_BPF_ID = 11  # a cls_bpf filter's program id, in TCA_OPTIONS
