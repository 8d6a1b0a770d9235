"""openat() calls per process name, counted at the syscall's tracepoint:
`python main.py --seconds 10 [--pid PID]`."""

import argparse
import json
import sys
import time

from opens import Opens

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--seconds", type=float, default=5)
parser.add_argument("--pid", type=int, default=0, help="only this process (the filter runs in the kernel)")
parser.add_argument("--json", action="store_true", help="one JSON object per process name")
args = parser.parse_args()

spec = Opens.open()
spec.config.cfg_tgid = args.pid  # a const volatile: the verifier sees it as a constant
with spec.load() as obj, obj.programs.count_opens.attach_tracepoint("syscalls", "sys_enter_openat"):
    print(f"counting openat for {args.seconds:g} s", file=sys.stderr)
    time.sleep(args.seconds)
    counts = [(comm.name.decode(errors="replace"), sum(per_cpu)) for comm, per_cpu in obj.maps.opens.items()]

for comm, opens in sorted(counts, key=lambda c: -c[1]):
    print(json.dumps({"comm": comm, "opens": opens}) if args.json else f"{comm:<16} {opens:>8}")
