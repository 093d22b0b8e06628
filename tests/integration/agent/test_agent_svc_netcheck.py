"""netcheck against real STUN servers (meshctl.stun) in test-made namespaces, through a real NAT.

Topology: client ns --veth-- router ns (nft masquerade) --veth-- internet ns with two STUN servers on two
addresses. An endpoint-independent masquerade must read as an easy NAT; `masquerade fully-random` (a new
port per destination) as a hard one.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from meshctl.agent.netcheck import NetcheckReport, StunWaiter, run_netcheck, socket_prober
from meshctl.stun import StunServer, start_stun_server
from meshctl.wire.derpmap import DERPMap, DerpNode, DerpRegion

from .test_agent_svc_netns import LoopInNetns, make_netns, needs_root, sh, unique

pytestmark = [pytest.mark.integration, pytest.mark.root, needs_root]

STUN_A, STUN_B, ROUTER_OUT = "203.0.113.2", "203.0.113.3", "203.0.113.1"
WG_PORT = 41641
DERP_MAP = DERPMap({
    900: DerpRegion(900, "near", "Near", (DerpNode("900a", 900, "near.test", ipv4=STUN_A),)),
    901: DerpRegion(901, "far", "Far", (DerpNode("901a", 901, "far.test", ipv4=STUN_B),)),
})


@dataclass
class Net:
    client: LoopInNetns
    internet: LoopInNetns
    servers: list[StunServer]


def _topology(nat: str) -> Iterator[Net]:
    gens = [make_netns() for _ in range(3)]
    client, router, internet = (next(g) for g in gens)
    loops: list[LoopInNetns] = []
    servers: list[StunServer] = []
    try:
        c0, r0, r1, i0 = (unique(p) for p in ("svcc", "svcr", "svcs", "svci"))
        sh("ip", "link", "add", c0, "netns", client, "type", "veth", "peer", "name", r0, "netns", router)
        sh("ip", "link", "add", r1, "netns", router, "type", "veth", "peer", "name", i0, "netns", internet)
        for ns, dev, addr in ((client, c0, "10.201.0.2/24"), (router, r0, "10.201.0.1/24"),
                              (router, r1, f"{ROUTER_OUT}/24"), (internet, i0, f"{STUN_A}/24"),
                              (internet, i0, f"{STUN_B}/24")):
            sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", client, "route", "add", "default", "via", "10.201.0.1")
        sh("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        sh("ip", "netns", "exec", router, "nft", "-f", "-", input=(
            "table ip nat {\n chain post {\n  type nat hook postrouting priority srcnat;\n"
            f'  oifname "{r1}" {nat}\n }}\n}}\n'))
        loops.append(LoopInNetns(internet))
        loops.append(LoopInNetns(client))
        for address in (STUN_A, STUN_B):
            servers.append(loops[0].run(start_stun_server(address, 3478)))
        yield Net(loops[1], loops[0], servers)
    finally:
        for server in servers:
            if server.transport is not None:
                loops[0].loop.call_soon_threadsafe(server.transport.close)
        for loop in loops:
            loop.close()
        for gen in gens:
            next(gen, None)


@pytest.fixture
def easy_nat() -> Iterator[Net]:
    yield from _topology("masquerade")


@pytest.fixture
def hard_nat() -> Iterator[Net]:
    yield from _topology("masquerade fully-random")


async def netcheck_from_wireguard_port() -> NetcheckReport:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", WG_PORT))
    try:
        return await run_netcheck(DERP_MAP, socket_prober(sock), timeout=2.0, parallel=False)
    finally:
        sock.close()


def test_easy_nat_maps_the_port_the_same_way_for_every_destination(easy_nat: Net) -> None:
    report = easy_nat.client.run(netcheck_from_wireguard_port())
    assert [p.error for p in report.probes] == [None, None]
    assert {p.reflexive[0] for p in report.probes if p.reflexive} == {ROUTER_OUT}
    assert report.mapping_varies_by_dest is False
    assert report.global_addr is not None and report.global_addr.startswith(f"{ROUTER_OUT}:")
    assert report.preferred_region in (900, 901)


def test_fully_random_nat_is_reported_as_hard(hard_nat: Net) -> None:
    report = hard_nat.client.run(netcheck_from_wireguard_port())
    assert all(p.reflexive is not None for p in report.probes)
    assert report.mapping_varies_by_dest is True
    assert report.to_json()["mappingVariesByDestIP"] is True


def test_waiter_on_a_socket_owned_by_a_transport(easy_nat: Net) -> None:
    """The daemon's way: its datagram transport reads the socket and hands STUN replies to the waiter."""

    async def scenario() -> NetcheckReport:
        loop = asyncio.get_running_loop()
        waiter: StunWaiter | None = None

        class Disco(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                assert waiter is not None
                waiter.feed(data)

        transport, _ = await loop.create_datagram_endpoint(Disco, local_addr=("0.0.0.0", WG_PORT))
        waiter = StunWaiter(transport.sendto)
        try:
            return await run_netcheck(DERP_MAP, waiter, timeout=2.0)
        finally:
            transport.close()

    report = easy_nat.client.run(scenario())
    assert [p.error for p in report.probes] == [None, None]
    assert report.mapping_varies_by_dest is False
    assert all(p.latency is not None and p.latency < 1.0 for p in report.probes)


def test_unreachable_stun_servers_are_reported_not_raised(easy_nat: Net) -> None:
    for server in easy_nat.servers:
        assert server.transport is not None
        easy_nat.internet.loop.call_soon_threadsafe(server.transport.close)
    report = easy_nat.client.run(netcheck_from_wireguard_port())
    assert report.udp is False
    assert report.mapping_varies_by_dest is None
    assert all(p.error for p in report.probes)
