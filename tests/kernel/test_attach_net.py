"""Socket and network-namespace hooks: a socket filter, sk_lookup and the flow dissector on a fresh network
namespace, sk_msg and sk_skb on a sockmap and a sockhash, and netfilter hooks. Each counts exactly what
the test sends, and nothing once its link is closed."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from bpfscope._attach.net import in_netns
from bpfscope._attach.probes import netfilter_link
from bpfscope.errors import BpfscopeError
from bpfscope.object import Object, ObjectSpec
from bpfscope.program import AttachType, NetfilterFamily, NetfilterHook
from tests.kernel.attach_support import hits, kill_9_leaves_nothing, links_of, one_line

COUNT = 25
STEERED_PORT = 7777  # nothing listens here: sk_lookup hands its connections to the test's listener


# Kernels before 6.4 cannot load a netfilter program at all: the object leaves it out there.
NETFILTER_PROGRAM = "count_packets_out"


@pytest.fixture
def obj(test_object) -> Iterator[Object]:
    spec = ObjectSpec.open(test_object("attach_net"))
    spec.rodata["cfg_steered_port"] = STEERED_PORT
    spec.programs[NETFILTER_PROGRAM].autoload = netfilter_link() is None
    with spec.load() as loaded:
        yield loaded


def skip_without_netfilter_links() -> None:
    missing = netfilter_link()
    if missing is not None:
        pytest.skip(str(missing))


def test_socket_filter_counts_datagrams_on_its_socket(obj):
    sender, receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with sender, receiver:
        with obj.programs["count_datagrams"].attach_socket(receiver):
            for _ in range(COUNT):
                sender.send(b"datagram")
                assert receiver.recv(64) == b"datagram"  # kept whole
        sender.send(b"after")
        receiver.recv(64)
    assert hits(obj, "SOCKET_FILTER") == COUNT


def test_sk_lookup_steers_connections_in_a_fresh_netns(obj, veth_pair):
    listener = in_netns(veth_pair.ns, lambda: socket.create_server(("127.0.0.1", 0)))
    with listener:
        obj.maps["listeners"][0] = listener.fileno()
        with obj.programs["steer_port"].attach_netns(veth_pair.ns) as link:
            assert veth_pair.ns in link.description
            for _ in range(COUNT):
                with in_netns(veth_pair.ns, lambda: socket.create_connection(("127.0.0.1", STEERED_PORT), 5)):
                    listener.accept()[0].close()
        with pytest.raises(ConnectionRefusedError):  # detached: nothing listens there
            in_netns(veth_pair.ns, lambda: socket.create_connection(("127.0.0.1", STEERED_PORT), 5))
    assert hits(obj, "SK_LOOKUP") == COUNT


def test_flow_dissector_sees_each_packet_the_netns_hashes(obj, veth_pair):
    # With RPS on, the receiving end hashes (dissects) each packet to pick a CPU.
    veth_pair.exec(["sh", "-c", f"echo 1 > /sys/class/net/{veth_pair.peer}/queues/rx-0/rps_cpus"], check=True)
    with obj.programs["count_dissections"].attach_netns(veth_pair.ns):
        veth_pair.send_udp(count=COUNT)
        with pytest.raises(BpfscopeError, match="has its flow dissector already") as busy:
            obj.programs["count_dissections"].attach_netns(veth_pair.ns)
        one_line(busy.value)
    veth_pair.send_udp(count=5)
    assert hits(obj, "FLOW_DISSECTOR") == COUNT


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        return client, server.accept()[0]


@pytest.mark.parametrize(("program", "map_name", "hit"), [
    ("count_sends", "senders", "SK_MSG"),
    ("count_receives", "receivers", "SK_SKB"),
])
def test_sockmap_programs_count_messages_of_the_sockets_in_the_map(obj, program, map_name, hit):
    client, server = tcp_pair()
    watched = client if hit == "SK_MSG" else server
    with client, server:
        # Sockets take the map's programs when they are added: attach first, add after.
        with obj.programs[program].attach_sockmap(obj.maps[map_name]) as link:
            assert map_name in link.description
            obj.maps[map_name][0] = watched.fileno()
            for _ in range(COUNT):
                client.sendall(b"message")
                assert server.recv(64) == b"message"
            del obj.maps[map_name][0]
    assert hits(obj, hit) == COUNT


def test_sockmap_bad_input_is_one_line(obj):
    with pytest.raises(BpfscopeError, match="map 'hits' is not a sockmap or sockhash") as not_sockmap:
        obj.programs["count_sends"].attach_sockmap(obj.maps["hits"])
    with pytest.raises(BpfscopeError, match="attach_sockmap attaches sk_msg or sk_skb programs") as wrong_type:
        obj.programs["count_datagrams"].attach_sockmap(obj.maps["senders"])
    for exc in (not_sockmap.value, wrong_type.value):
        one_line(exc)
    assert links_of(obj.programs["count_sends"]) == []


def test_sockmap_hook_given_overrides_the_section(obj):
    with obj.programs["count_receives"].attach_sockmap(obj.maps["receivers"],
                                                       attach_type=AttachType.SK_SKB_STREAM_PARSER) as link:
        assert "sk_skb_stream_parser" in link.description


@pytest.mark.parametrize("defrag", [False, True])
def test_netfilter_local_out_counts_what_a_fresh_netns_sends(obj, veth_pair, defrag):
    skip_without_netfilter_links()

    def udp_pair() -> tuple[socket.socket, socket.socket]:
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.bind(("127.0.0.1", 0))
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM), receiver

    sender, receiver = in_netns(veth_pair.ns, udp_pair)
    with sender, receiver:
        with obj.programs["count_packets_out"].attach_netfilter(
                family=NetfilterFamily.IPV4, hook=NetfilterHook.LOCAL_OUT, priority=100, defrag=defrag,
                netns=veth_pair.ns) as link:
            assert "netfilter ipv4 local_out priority 100" in link.description
            for _ in range(COUNT):
                sender.sendto(b"x", receiver.getsockname())
                receiver.recv(16)
        sender.sendto(b"x", receiver.getsockname())
        receiver.recv(16)
    assert hits(obj, "NETFILTER") == COUNT


def test_netfilter_bad_priority_is_one_line(obj, veth_pair):
    skip_without_netfilter_links()
    with pytest.raises(BpfscopeError, match="priority -2147483648 is not allowed") as exc:
        obj.programs["count_packets_out"].attach_netfilter(
            family=NetfilterFamily.IPV4, hook=NetfilterHook.LOCAL_OUT, priority=-2**31, netns=veth_pair.ns)
    one_line(exc.value)
    assert links_of(obj.programs["count_packets_out"]) == []


def test_a_missing_netns_is_one_line(obj):
    with pytest.raises(BpfscopeError, match="no network namespace 'bpfscope-no-such-ns'") as exc:
        obj.programs["steer_port"].attach_netns("bpfscope-no-such-ns")
    one_line(exc.value)


@pytest.mark.parametrize(("program", "method"), [
    ("count_datagrams", r"attach_socket\(sock\)"),
    ("steer_port", r"attach_netns\(netns\)"),
    ("count_dissections", r"attach_netns\(netns\)"),
    ("count_sends", r"attach_sockmap\(map\)"),
    ("count_packets_out", r"attach_netfilter\(family=, hook=, priority=\)"),
])
def test_auto_attach_names_the_method(obj, program, method):
    if program == NETFILTER_PROGRAM:
        skip_without_netfilter_links()
    with pytest.raises(BpfscopeError, match=f"attach it with {method}") as exc:
        obj.programs[program].attach()
    one_line(exc.value)


NETNS_KINDS = {
    "socket_filter": ("import socket; pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
                      "link = obj.programs['count_datagrams'].attach_socket(pair[1])"),
    "sk_lookup": "link = obj.programs['steer_port'].attach_netns(sys.argv[2])",
    "flow_dissector": "link = obj.programs['count_dissections'].attach_netns(sys.argv[2])",
    "sk_msg": "link = obj.programs['count_sends'].attach_sockmap(obj.maps['senders'])",
    "netfilter": ("from bpfscope.program import NetfilterFamily, NetfilterHook\n"
                  "link = obj.programs['count_packets_out'].attach_netfilter(family=NetfilterFamily.IPV4, "
                  "hook=NetfilterHook.LOCAL_OUT, priority=100, netns=sys.argv[2])"),
}


@pytest.mark.parametrize("kind", sorted(NETNS_KINDS))
def test_kill_9_leaves_nothing_attached(test_object, veth_pair, kind):
    if kind == "netfilter":
        skip_without_netfilter_links()
    configure = f"program.autoload = name != {NETFILTER_PROGRAM!r}" if kind != "netfilter" else "pass"
    kill_9_leaves_nothing(test_object("attach_net"), NETNS_KINDS[kind], veth_pair.ns, configure=configure)
