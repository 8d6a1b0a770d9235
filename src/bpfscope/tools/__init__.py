"""bpfscope's tools: each a `<name>.bpf.c` beside the `<name>.py` that drives it."""

TOOLS = {
    "packets": "count packets and bytes by protocol on an interface (XDP)",
    "flows": "track connections on an interface: packets, bytes, flags per flow and direction (tc)",
    "guard": "drop floods: a per-source rate limit with allow and deny lists (XDP)",
    "tcmon": "watch traffic for scans, SYN floods, denied addresses and payload patterns (tc)",
    "opensnoop": "trace file opens: pid, comm, path, fd or error (syscall tracepoints)",
    "execsnoop": "trace new programs: pid, ppid, uid, arguments, result (tracepoints)",
    "funclatency": "time a function in a binary or library as a log2 histogram (uprobes)",
    "httptrace": "trace HTTP/1.x requests of any process, plain and OpenSSL (tracepoints, uprobes)",
}
