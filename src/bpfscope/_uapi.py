"""The kernel's numbers, each defined once, under the header that defines it (include/uapi/linux/ unless
said otherwise). Public enums among them (MapType, ProgramType, UpdateFlags, XdpAction) are re-exported
by maps and program; the rest stay private to bpfscope. No imports beyond the standard library: doctor
and the feature probes read these without loading numpy."""

from __future__ import annotations

import enum

from ._arch import machine

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
    SOCKMAP = 15
    SOCKHASH = 18
    QUEUE = 22
    STACK = 23
    SK_STORAGE = 24
    STRUCT_OPS = 26
    RINGBUF = 27
    INODE_STORAGE = 28
    TASK_STORAGE = 29
    CGRP_STORAGE = 32


class ProgramType(enum.IntEnum):
    """enum bpf_prog_type."""

    UNSPEC = 0
    SOCKET_FILTER = 1
    KPROBE = 2  # also uprobes and USDT
    SCHED_CLS = 3
    SCHED_ACT = 4
    TRACEPOINT = 5
    XDP = 6
    PERF_EVENT = 7
    CGROUP_SKB = 8
    CGROUP_SOCK = 9
    LWT_IN = 10
    LWT_OUT = 11
    LWT_XMIT = 12
    SOCK_OPS = 13
    SK_SKB = 14
    CGROUP_DEVICE = 15
    SK_MSG = 16
    RAW_TRACEPOINT = 17
    CGROUP_SOCK_ADDR = 18
    LWT_SEG6LOCAL = 19
    LIRC_MODE2 = 20
    SK_REUSEPORT = 21
    FLOW_DISSECTOR = 22
    CGROUP_SYSCTL = 23
    RAW_TRACEPOINT_WRITABLE = 24
    CGROUP_SOCKOPT = 25
    TRACING = 26  # fentry, fexit, fmod_ret, tp_btf, iterators
    STRUCT_OPS = 27
    EXT = 28  # freplace
    LSM = 29
    SK_LOOKUP = 30
    SYSCALL = 31
    NETFILTER = 32


class AttachType(enum.IntEnum):
    """enum bpf_attach_type: where a program attaches (a cgroup hook, a sockmap's verdict, ...)."""

    CGROUP_INET_INGRESS = 0
    CGROUP_INET_EGRESS = 1
    CGROUP_INET_SOCK_CREATE = 2
    CGROUP_SOCK_OPS = 3
    SK_SKB_STREAM_PARSER = 4
    SK_SKB_STREAM_VERDICT = 5
    CGROUP_DEVICE = 6
    SK_MSG_VERDICT = 7
    CGROUP_INET4_BIND = 8
    CGROUP_INET6_BIND = 9
    CGROUP_INET4_CONNECT = 10
    CGROUP_INET6_CONNECT = 11
    CGROUP_INET4_POST_BIND = 12
    CGROUP_INET6_POST_BIND = 13
    CGROUP_UDP4_SENDMSG = 14
    CGROUP_UDP6_SENDMSG = 15
    LIRC_MODE2 = 16
    FLOW_DISSECTOR = 17
    CGROUP_SYSCTL = 18
    CGROUP_UDP4_RECVMSG = 19
    CGROUP_UDP6_RECVMSG = 20
    CGROUP_GETSOCKOPT = 21
    CGROUP_SETSOCKOPT = 22
    TRACE_RAW_TP = 23
    TRACE_FENTRY = 24
    TRACE_FEXIT = 25
    MODIFY_RETURN = 26
    LSM_MAC = 27
    TRACE_ITER = 28
    CGROUP_INET4_GETPEERNAME = 29
    CGROUP_INET6_GETPEERNAME = 30
    CGROUP_INET4_GETSOCKNAME = 31
    CGROUP_INET6_GETSOCKNAME = 32
    XDP_DEVMAP = 33
    CGROUP_INET_SOCK_RELEASE = 34
    XDP_CPUMAP = 35
    SK_LOOKUP = 36
    XDP = 37
    SK_SKB_VERDICT = 38
    SK_REUSEPORT_SELECT = 39
    SK_REUSEPORT_SELECT_OR_MIGRATE = 40
    PERF_EVENT = 41
    TRACE_KPROBE_MULTI = 42
    LSM_CGROUP = 43
    STRUCT_OPS = 44
    NETFILTER = 45
    TCX_INGRESS = 46
    TCX_EGRESS = 47
    TRACE_UPROBE_MULTI = 48
    CGROUP_UNIX_CONNECT = 49
    CGROUP_UNIX_SENDMSG = 50
    CGROUP_UNIX_RECVMSG = 51
    CGROUP_UNIX_GETPEERNAME = 52
    CGROUP_UNIX_GETSOCKNAME = 53
    NETKIT_PRIMARY = 54
    NETKIT_PEER = 55
    TRACE_KPROBE_SESSION = 56
    TRACE_UPROBE_SESSION = 57


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


class CgroupIterOrder(enum.IntEnum):
    """enum bpf_cgroup_iter_order: how a cgroup iterator walks from its cgroup."""

    SELF_ONLY = 1
    DESCENDANTS_PRE = 2
    DESCENDANTS_POST = 3
    ANCESTORS_UP = 4


BPF_PROG_QUERY = 16  # enum bpf_cmd
BPF_LINK_CREATE = 28
BPF_F_LINK = 1 << 13  # a map's flags: a struct_ops map registered through a link
BPF_F_UPROBE_MULTI_RETURN = 1  # BPF_LINK_CREATE, BPF_TRACE_UPROBE_MULTI: its uprobe_multi.flags
BPF_F_NETFILTER_IP_DEFRAG = 1  # BPF_LINK_CREATE, BPF_NETFILTER: its netfilter.flags (Linux 6.6+)
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
BPF_F_MMAPABLE = 1 << 10  # a map's flags: an array whose values user space can mmap (Linux 5.5+)

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
NR_BPF = {"x86_64": 321, "aarch64": 280}[machine()]
NR_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}[machine()]

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


class HardwareEvent(enum.IntEnum):
    """enum perf_hw_id: counters of the CPU's PMU (PERF_TYPE_HARDWARE); a VM without a virtual PMU has none."""

    CPU_CYCLES = 0
    INSTRUCTIONS = 1
    CACHE_REFERENCES = 2
    CACHE_MISSES = 3
    BRANCH_INSTRUCTIONS = 4
    BRANCH_MISSES = 5
    BUS_CYCLES = 6
    STALLED_CYCLES_FRONTEND = 7
    STALLED_CYCLES_BACKEND = 8
    REF_CPU_CYCLES = 9


class SoftwareEvent(enum.IntEnum):
    """enum perf_sw_ids: events the kernel counts itself (PERF_TYPE_SOFTWARE)."""

    CPU_CLOCK = 0
    TASK_CLOCK = 1
    PAGE_FAULTS = 2
    CONTEXT_SWITCHES = 3
    CPU_MIGRATIONS = 4
    PAGE_FAULTS_MIN = 5
    PAGE_FAULTS_MAJ = 6
    ALIGNMENT_FAULTS = 7
    EMULATION_FAULTS = 8
    DUMMY = 9
    BPF_OUTPUT = 10  # what bpf_perf_event_output writes to (perf event arrays)


PERF_TYPE_HARDWARE = 0  # enum perf_type_id
PERF_TYPE_SOFTWARE = 1
PERF_ATTR_SIZE_VER0 = 64  # the first struct perf_event_attr: the kernel takes any later size too
PERF_ATTR_FREQ = 1 << 10  # struct perf_event_attr's `freq` bit: sample_freq, not sample_period
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_SAMPLE_RAW = 1 << 10  # enum perf_event_sample_format
PERF_ATTR_WATERMARK = 1 << 14  # struct perf_event_attr's `watermark` bit: wake up by bytes, not by events
PERF_RECORD_LOST = 2  # enum perf_event_type
PERF_RECORD_SAMPLE = 9
PERF_EVENT_IOC_ENABLE = 0x2400  # _IO('$', 0)
# struct perf_event_mmap_page: where its ring's positions and data area are (data_offset and data_size
# from Linux 4.1; before that the data starts at the second page).
PERF_MMAP_DATA_HEAD = 1024
PERF_MMAP_DATA_TAIL = 1032
PERF_MMAP_DATA_OFFSET = 1040
PERF_MMAP_DATA_SIZE = 1048

# --- netfilter.h ---


class NetfilterFamily(enum.IntEnum):
    """NFPROTO_*: the protocol family of a netfilter hook BPF attaches to."""

    IPV4 = 2
    IPV6 = 10


class NetfilterHook(enum.IntEnum):
    """enum nf_inet_hooks: where in the IP stack a netfilter hook runs."""

    PRE_ROUTING = 0
    LOCAL_IN = 1
    FORWARD = 2
    LOCAL_OUT = 3
    POST_ROUTING = 4


# --- asm-generic/socket.h (x86 and arm64 alike) ---

SO_DETACH_BPF = 27  # SO_DETACH_FILTER
SO_ATTACH_BPF = 50

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
