"""Custom programs in the agent, as ebpf_exporter runs them: a user's `.bpf.c` (compiled here, with
bpfscope's headers) or `.bpf.o`, and a metrics YAML beside it (same basename) saying which maps
become Prometheus metrics and how key fields become labels. Every type comes from the object's BTF:
the YAML names fields, never offsets or sizes, and it is checked against that BTF before anything
reaches the kernel, each mistake one line naming the field.

The metrics YAML (examples/agent/ has three, each beside its program)::

    counters:                        # gauges: has the same shape
      - name: bpfscope_read_bytes_total   # the full Prometheus name; a counter's ends with _total
        help: Bytes returned by read(), by command
        map: read_bytes              # a hash or array map, per-CPU or not (per-CPU values are summed)
        value: bytes                 # a number field of the value struct; left out when the value is a number
        multiplier: 1                # scales the values (1e-9 turns nanoseconds into seconds)
        labels:
          - name: comm               # defaults to the field's name
            field: comm              # a field of the key struct; left out when the key is one value
            decoder: string          # int | string | comm | ipv4 | ipv6 | cgroup | ksym | enum
    histograms:
      - name: bpfscope_read_size_bytes
        help: Sizes read() returned
        map: read_sizes
        bucket_field: slot           # the key field holding the bucket index
        buckets: log2                # log2 | linear (with bucket_width: N) | fixed (with bucket_bounds: [...])
        max_bucket: 30               # optional: the index the program clamps larger values into
        value: count                 # the bucket's count, when the value is a struct
        sum_field: bytes             # optional: the total of the values counted, kept by the program
        multiplier: 1                # scales bucket bounds and the sum
        labels: [...]
    attach:
      xdp: [eth0]                    # interfaces for SEC("xdp") programs
      xdp_mode: auto                 # auto | native | generic
      tc_ingress: [eth0]             # interfaces for SEC("tc") programs, by direction
      tc_egress: []
      perf_frequency: 99             # SEC("perf_event") programs run this often a second on each CPU

Rows whose labels decode alike are added together, so key fields left out of the labels are summed
over. A label's decoder defaults from its field's type (char array: string, enum: enum, integer:
int); the others are asked for by name:

- int: an integer as a decimal number.
- string: a char (or __u8) array, up to its first NUL; invalid UTF-8 is backslash-escaped.
- comm: the same, for a char[16] (TASK_COMM_LEN) from bpf_get_current_comm().
- ipv4: a __be32 or __u8[4] in network order, as 192.0.2.1.
- ipv6: a __u8[16] (or struct in6_addr), as 2001:db8::1; an IPv4-mapped address (::ffff:192.0.2.1)
  is shown as 192.0.2.1, so one field can hold both families.
- cgroup: a __u64 cgroup id (bpf_get_current_cgroup_id()) as its cgroup v2 path, "" when the cgroup is
  gone or not yet seen.
- ksym: a kernel address as the name of the nearest symbol at or below it in /proc/kallsyms (read once,
  at open); 0x... when below every symbol. It needs CAP_SYSLOG, without which the kernel shows every
  address as 0: the open (and the agent's --check) then fails in one line saying so.
- enum: an enum field as its enumerator's name from BTF; a value the enum does not name as a number.

Buckets, by the index the program writes into `bucket_field` (values are integers, as in BPF; `le` is
the largest value a bucket holds, times `multiplier`):

- log2: index i holds values from 2^i to 2^(i+1) - 1 (index 0 holds 0 and 1), the floor of log2 as
  BCC and bpfscope's tools compute it; le = 2^(i+1) - 1.
- linear: index i holds values from i*w to (i+1)*w - 1 for bucket_width w; le = (i+1)*w - 1.
- fixed: index i holds values up to bucket_bounds[i] (and above the bound before it); le = that bound.
  An index past the last bound holds the rest.

With `max_bucket: N` (log2, linear) indices 0 to N-1 are always exported and index N, where the program
clamps what is larger, counts only toward +Inf; without it buckets go up to the highest index seen.
Buckets are cumulative and end with +Inf; at most 64 (log2) or 4096 have a bound. `_sum` is what the
program adds up in `sum_field`, so it is exact: it is never estimated from bucket bounds. Without
`sum_field` a histogram has no `_sum`, and prometheus_client then leaves out `_count` too: the +Inf
bucket is the count.

Programs attach as their section says: SEC("tracepoint/CATEGORY/NAME") and SEC("tp/CATEGORY/NAME")
to that tracepoint, SEC("uprobe/BINARY:FUNCTION[+OFFSET]") and SEC("uretprobe/...") to that function
(BINARY a path or a library name such as libc), SEC("perf_event") to a cpu-clock event on every CPU,
SEC("xdp") and SEC("tc") to the interfaces `attach:` lists. Any other section is refused, naming the
program; a program whose section starts with "?" (autoload off) is left out.

Maps the metrics read are pinned under `pin_dir/<basename>/<map>`: a restart takes them over, so
counts carry on. Nothing else is pinned, and nothing stays attached when opening fails."""

from .attach import AttachSpec
from .cache import build_cached
from .source import CustomProgram
from .spec import DECODERS, Buckets, LabelSpec, MetricSpec, MetricsSpec, load_metrics, parse_metrics

__all__ = [
    "DECODERS", "AttachSpec", "Buckets", "CustomProgram", "LabelSpec", "MetricSpec", "MetricsSpec", "build_cached",
    "load_metrics", "parse_metrics",
]
