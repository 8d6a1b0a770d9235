"""XDP: count the frames an interface receives until Enter is pressed: `python xdp.py IFACE`."""
import sys
from pathlib import Path

from bpfscope import XdpMode, load

iface = sys.argv[1]
with load(Path(__file__).with_name("net.bpf.o")) as obj, \
        obj.programs["count_frames"].attach_xdp(iface, mode=XdpMode.AUTO) as link:
    input(f"counting on {iface} (XDP {link.mode.value}); Enter stops\n")
    print("frames received:", obj.bss["xdp_frames"])
