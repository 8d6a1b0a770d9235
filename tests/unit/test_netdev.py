"""Interface helpers, on this machine's interfaces and on route tables written for the test."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from bpfscope import netdev
from bpfscope.errors import InterfaceNotFoundError

ROUTE_HEADER = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
# The kernel's own unreachable ::/0 on lo (RTF_REJECT): never the default route's interface.
IPV6_REJECT_DEFAULT = (
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n"
)


def test_interfaces_sorted_with_lo() -> None:
    names = netdev.interfaces()
    assert "lo" in names
    assert names == sorted(names)


def test_lo_is_index_1() -> None:
    assert netdev.ifindex("lo") == 1
    assert netdev.ifname(1) == "lo"


def test_every_interface_round_trips() -> None:
    for name in netdev.interfaces():
        assert netdev.ifname(netdev.ifindex(name)) == name


def test_unknown_name_lists_existing() -> None:
    with pytest.raises(InterfaceNotFoundError) as caught:
        netdev.ifindex("nosuchif0")
    assert caught.value.errno == errno.ENODEV
    assert caught.value.name == "nosuchif0"
    assert "'nosuchif0'" in str(caught.value) and "lo" in str(caught.value)
    assert isinstance(caught.value, OSError)


def test_unknown_index() -> None:
    with pytest.raises(InterfaceNotFoundError, match="lo"):
        netdev.ifname(2**31 - 1)


def test_default_route_interface_exists_or_none() -> None:
    iface = netdev.default_route_interface()
    assert iface is None or iface in netdev.interfaces()


@pytest.fixture
def routes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    v4, v6 = tmp_path / "route", tmp_path / "ipv6_route"
    monkeypatch.setattr(netdev, "_PROC_ROUTE", v4)
    monkeypatch.setattr(netdev, "_PROC_IPV6_ROUTE", v6)
    return v4, v6


def test_ipv4_default_lowest_metric_wins(routes: tuple[Path, Path]) -> None:
    v4, v6 = routes
    v4.write_text(
        ROUTE_HEADER
        + "wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n"
        + "eth1\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"  # not a default route
        + "eth9\t00000000\t0101A8C0\t0002\t0\t0\t1\t00000000\t0\t0\t0\n"  # not RTF_UP
        + "eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
    )
    v6.write_text(IPV6_REJECT_DEFAULT)
    assert netdev.default_route_interface() == "eth0"


def test_ipv6_default_when_no_ipv4_one(routes: tuple[Path, Path]) -> None:
    v4, v6 = routes
    v4.write_text(ROUTE_HEADER + "eth1\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n")
    v6.write_text(
        IPV6_REJECT_DEFAULT + "20010db8000000000000000000000000 40 00000000000000000000000000000000 00 "
        "00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth1\n"
        "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
        "fe800000000000000000000000000001 00000400 00000002 00000000 00000003     wg0\n"
    )
    assert netdev.default_route_interface() == "wg0"


def test_no_default_route(routes: tuple[Path, Path]) -> None:
    v4, v6 = routes
    v4.write_text(ROUTE_HEADER)
    v6.write_text(IPV6_REJECT_DEFAULT)
    assert netdev.default_route_interface() is None
    v6.unlink()  # a kernel or namespace without IPv6
    assert netdev.default_route_interface() is None
