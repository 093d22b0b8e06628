"""IPAM: one IPv4 in 100.64.0.0/10 and one IPv6 in fd7a:115c:a1e0::/48, never a used one, never 100.100.100.100."""

from __future__ import annotations

import ipaddress

import pytest

from meshctl.control.ipam import AddressPoolExhaustedError, Ipam

V4 = ipaddress.IPv4Network("100.64.0.0/10")
V6 = ipaddress.IPv6Network("fd7a:115c:a1e0::/48")


def test_first_addresses_and_prefixes() -> None:
    v4, v6 = Ipam(V4, V6).allocate(set(), set())
    assert v4 == "100.64.0.1" and v6 == "fd7a:115c:a1e0::1"
    assert ipaddress.IPv4Address(v4) in V4 and ipaddress.IPv6Address(v6) in V6


def test_never_hands_out_a_used_address() -> None:
    ipam = Ipam(V4, V6)
    used4: set[str] = set()
    used6: set[str] = set()
    for _ in range(300):
        a4, a6 = ipam.allocate(used4, used6)
        assert a4 not in used4 and a6 not in used6
        used4.add(a4)
        used6.add(a6)
    assert len(used4) == 300 and len(used6) == 300


def test_skips_magicdns_resolver_address() -> None:
    net = ipaddress.IPv4Network("100.100.100.96/29")  # .97-.102 usable, .100 reserved
    ipam = Ipam(net, V6)
    used: set[str] = set()
    for _ in range(5):
        used.add(ipam.allocate(used, set())[0])
    assert "100.100.100.100" not in used
    assert used == {"100.100.100.97", "100.100.100.98", "100.100.100.99", "100.100.100.101", "100.100.100.102"}


def test_exhaustion_is_a_clear_error() -> None:
    ipam = Ipam(ipaddress.IPv4Network("100.64.0.0/30"), V6)
    used = {ipam.allocate(set(), set())[0]}
    used.add(ipam.allocate(used, set())[0])
    with pytest.raises(AddressPoolExhaustedError, match=r"no free address left in 100.64.0.0/30"):
        ipam.allocate(used, set())


def test_freed_address_is_found_again_after_wrap() -> None:
    ipam = Ipam(ipaddress.IPv4Network("100.64.0.0/29"), V6)
    used: set[str] = set()
    for _ in range(6):
        used.add(ipam.allocate(used, set())[0])
    used.discard("100.64.0.3")  # node deleted: its address may come back only now
    assert ipam.allocate(used, set())[0] == "100.64.0.3"
