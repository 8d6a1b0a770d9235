"""Packets and bytes per IPv4 source an interface receives, counted by XDP:
`python main.py --iface eth0 --seconds 10`."""

import argparse
import ipaddress
import json
import sys
import time

from xdp_sources import XdpSources

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--iface", required=True)
parser.add_argument("--seconds", type=float, default=5)
parser.add_argument("--json", action="store_true", help="one JSON object per source")
args = parser.parse_args()

with XdpSources.load() as obj, obj.programs.count_sources.attach_xdp(args.iface):
    print(f"counting sources on {args.iface} for {args.seconds:g} s", file=sys.stderr)
    time.sleep(args.seconds)
    keys, values = obj.maps.sources.lookup_batch_sum()  # one batch read, CPUs added up

for key, value in sorted(zip(keys.tolist(), values.tolist()), key=lambda kv: -kv[1][0]):
    source = str(ipaddress.IPv4Address(key.to_bytes(4, sys.byteorder)))  # the key is in network order
    packets, size = value
    print(json.dumps({"source": source, "packets": packets, "bytes": size}) if args.json
          else f"{source:<16} {packets:>10} packets {size:>12} bytes")
