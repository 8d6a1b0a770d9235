"""Bytes an interface sends per TCP or UDP destination port, counted at tc egress:
`python main.py --iface eth0 --seconds 10`."""

import argparse
import json
import sys
import time

from tc_ports import TcPorts

from bpfscope import TcDirection

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--iface", required=True)
parser.add_argument("--seconds", type=float, default=5)
parser.add_argument("--json", action="store_true", help="one JSON object per port")
args = parser.parse_args()

with TcPorts.load() as obj, obj.programs.count_ports.attach_tc(args.iface, direction=TcDirection.EGRESS):
    print(f"counting ports sent to from {args.iface} for {args.seconds:g} s", file=sys.stderr)
    time.sleep(args.seconds)
    ports, sizes = obj.maps.port_bytes.lookup_batch_sum()

for port, size in sorted(zip(ports.tolist(), sizes.tolist()), key=lambda ps: -ps[1]):
    print(json.dumps({"port": port, "bytes": size}) if args.json else f"{port:>5} {size:>12} bytes")
