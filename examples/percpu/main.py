"""System calls per CPU, each CPU counting in its own slot of a per-CPU array:
`python main.py --seconds 10`."""

import argparse
import json
import sys
import time

from syscalls import Syscalls

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--seconds", type=float, default=5)
parser.add_argument("--json", action="store_true", help="one JSON object")
args = parser.parse_args()

with Syscalls.load() as obj, obj.programs.count_syscalls.attach_tracepoint("raw_syscalls", "sys_enter"):
    print(f"counting system calls for {args.seconds:g} s", file=sys.stderr)
    time.sleep(args.seconds)
    per_cpu = list(obj.maps.syscalls[0])  # one value per possible CPU

if args.json:
    print(json.dumps({"per_cpu": per_cpu, "total": sum(per_cpu)}))
else:
    for cpu, count in enumerate(per_cpu):
        print(f"cpu {cpu:<3} {count:>12}")
    print(f"total   {sum(per_cpu):>12}")
