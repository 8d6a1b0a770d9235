"""bpfscope's tools: each a `<name>.bpf.c` beside the `<name>.py` that drives it."""

TOOLS = {
    "packets": "count packets and bytes by protocol on an interface (XDP)",
    "flows": "track connections on an interface: packets, bytes, flags per flow and direction (tc)",
    "guard": "drop floods: a per-source rate limit with allow and deny lists (XDP)",
    "tcmon": "watch traffic for scans, SYN floods, denied addresses and payload patterns (tc)",
}
