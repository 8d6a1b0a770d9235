"""Every program executed, streamed from the kernel through a ring buffer and read in batches:
`python main.py --seconds 10`."""

import argparse
import json
import sys
import time

from execs import Execs

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--seconds", type=float, default=5)
parser.add_argument("--json", action="store_true", help="one JSON object per exec")
args = parser.parse_args()

with Execs.load() as obj, obj.programs.report_exec.attach_tracepoint("sched", "sched_process_exec"):
    events = obj.rings.events
    print(f"tracing execs for {args.seconds:g} s", file=sys.stderr)
    end = time.monotonic() + args.seconds
    while (left := end - time.monotonic()) > 0:
        batch = events.poll(int(left * 1000))  # a numpy array of struct exec_event, drained at once
        for pid, ppid, comm in zip(batch["pid"].tolist(), batch["ppid"].tolist(), batch["comm"].tolist()):
            name = comm.decode(errors="replace")
            print(json.dumps({"pid": pid, "ppid": ppid, "comm": name}) if args.json else f"{pid:>7} {ppid:>7} {name}",
                  flush=True)
    if events.lost:
        print(f"{events.lost} execs lost: the ring was full", file=sys.stderr)
