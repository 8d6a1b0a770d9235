"""Which process names are on the CPUs, sampled at a fixed rate by a software clock perf event on
each CPU: `python main.py --seconds 10 --frequency 99`."""

import argparse
import json
import sys
import time

from oncpu import Oncpu

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--seconds", type=float, default=5)
parser.add_argument("--frequency", type=int, default=99, help="samples per second per CPU")
parser.add_argument("--json", action="store_true", help="one JSON object per process name")
args = parser.parse_args()

with Oncpu.load() as obj, obj.programs.sample_comm.attach_perf_event(frequency=args.frequency):
    print(f"sampling at {args.frequency} Hz for {args.seconds:g} s", file=sys.stderr)
    time.sleep(args.seconds)
    samples = [(comm.name.decode(errors="replace"), sum(per_cpu)) for comm, per_cpu in obj.maps.samples.items()]

for comm, count in sorted(samples, key=lambda c: -c[1]):
    print(json.dumps({"comm": comm, "samples": count}) if args.json else f"{comm:<16} {count:>8}")
