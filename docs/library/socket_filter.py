"""A socket filter on one socket: it sees what that socket receives, and nothing else."""
import socket
from pathlib import Path

from bpfscope import load

with load(Path(__file__).with_name("net.bpf.o")) as obj, \
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver, \
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
    receiver.bind(("127.0.0.1", 0))
    with obj.programs["count_datagrams"].attach_socket(receiver):
        for _ in range(5):
            sender.sendto(b"ping", receiver.getsockname())
            receiver.recv(16)
    print("datagrams seen:", obj.bss["socket_datagrams"])
