"""tc: count the packets an interface sends until Enter is pressed: `python tc.py IFACE`."""
import sys
from pathlib import Path

from bpfscope import TcDirection, load

iface = sys.argv[1]
with load(Path(__file__).with_name("net.bpf.o")) as obj, \
        obj.programs["count_packets"].attach_tc(iface, direction=TcDirection.EGRESS) as link:
    input(f"counting on {iface} (tc {link.mode.value} egress); Enter stops\n")
    print("packets sent:", obj.bss["tc_packets"])
