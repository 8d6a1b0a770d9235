"""A log2 histogram of the sizes a process asks malloc() for, from a uprobe on libc's malloc:
`python main.py --pid PID --seconds 10`."""

import argparse
import json
import sys
import time

from malloc_sizes import MallocSizes

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--pid", type=int, required=True)
parser.add_argument("--seconds", type=float, default=5)
parser.add_argument("--json", action="store_true", help="one JSON object per size range")
args = parser.parse_args()

with MallocSizes.load() as obj, obj.programs.count_malloc.attach_uprobe("libc", "malloc", pid=args.pid):
    print(f"counting malloc sizes in {args.pid} for {args.seconds:g} s", file=sys.stderr)
    time.sleep(args.seconds)
    _, counts = obj.maps.sizes.lookup_batch_sum()  # slot i: 2^i to 2^(i+1)-1 bytes

for slot, count in enumerate(counts.tolist()):
    if count:
        low, high = (0 if slot == 0 else 1 << slot), (1 << (slot + 1)) - 1
        print(json.dumps({"low": low, "high": high, "count": count}) if args.json
              else f"{low:>10} - {high:<10} {count:>8}")
