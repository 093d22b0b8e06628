"""MagicSock on loopback: real UDP disco sockets and relay sockets, DERP replaced by a direct hand-over.

Two agents' magicsocks start relayed, find each other's disco socket, switch to direct, fall back to
the relay when pongs stop; WireGuard datagrams cross the relay socket in both directions.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

from meshctl.agent.disco import Endpoint
from meshctl.agent.magicsock import MagicSock
from meshctl.agent.path import TRUST_DURATION
from meshctl.keys import DiscoPrivateKey, MachinePrivateKey, NodePrivateKey, NodePublicKey
from meshctl.wire import Node

pytestmark = pytest.mark.integration


def free_port_pair() -> int:
    """A port p with p and p+1 both free on 127.0.0.1 (WireGuard's and the disco socket's)."""
    for _ in range(50):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        if p >= 65534:
            continue
        t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            t.bind(("127.0.0.1", p + 1))
            return p
        except OSError:
            continue
        finally:
            t.close()
    raise RuntimeError("no free port pair")


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Handover:
    """Stands in for DERP: delivers a packet addressed to a node key to that side's magicsock."""

    def __init__(self) -> None:
        self.socks: dict[NodePublicKey, tuple[NodePublicKey, MagicSock]] = {}
        self.sent: list[tuple[NodePublicKey, bytes]] = []
        self.deliver = True

    def send(self, region: int, dst: NodePublicKey, packet: bytes) -> None:
        self.sent.append((dst, packet))
        if self.deliver and dst in self.socks:
            src, ms = self.socks[dst]
            asyncio.get_running_loop().call_soon(ms.on_derp_packet, src, packet)


def node(nid: int, key: NodePublicKey, disco: DiscoPrivateKey, wg_port: int) -> Node:
    return Node(id=nid, name=f"n{nid}", fqdn=f"n{nid}.mesh.test.", user="u", node_key=key,
                machine_key=MachinePrivateKey.generate().public_key(),
                addresses=(f"100.64.0.{nid}/32",), allowed_ips=(f"100.64.0.{nid}/32",),
                disco_key=disco.public_key(), endpoints=(f"127.0.0.1:{wg_port}",), home_derp=900)


async def settle(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def pair():  # type: ignore[no-untyped-def]
    clock = FakeClock()
    derp = Handover()
    ka, kb = NodePrivateKey.generate().public_key(), NodePrivateKey.generate().public_key()
    da, db = DiscoPrivateKey.generate(), DiscoPrivateKey.generate()
    pa, pb = free_port_pair(), free_port_pair()
    a = MagicSock(da, pa, pa + 1, derp, clock)
    b = MagicSock(db, pb, pb + 1, derp, clock)
    await a.start()
    await b.start()
    derp.socks = {kb: (ka, b), ka: (kb, a)}
    a.my_endpoints, b.my_endpoints = (f"127.0.0.1:{pa}",), (f"127.0.0.1:{pb}",)
    await a.set_peers([node(2, kb, db, pb)])
    await b.set_peers([node(1, ka, da, pa)])
    try:
        yield clock, derp, a, b, pa, pb
    finally:
        a.close()
        b.close()


def test_peers_start_relayed_then_go_direct_on_first_pong() -> None:
    asyncio.run(_peers_start_relayed_then_go_direct_on_first_pong())


async def _peers_start_relayed_then_go_direct_on_first_pong() -> None:
    async with pair() as p:
        await _peers_start_relayed_then_go_direct_on_first_pong_body(*p)


async def _peers_start_relayed_then_go_direct_on_first_pong_body(clock, derp, a, b, pa, pb) -> None:  # type: ignore[no-untyped-def]
    la, lb = a.peers[2], b.peers[1]
    assert la.direct is None and la.wg_endpoint == f"127.0.0.1:{la.relay_port}"
    assert [p.endpoint for p in a.wg_peers()] == [f"127.0.0.1:{la.relay_port}"]
    a.tick()
    await settle()
    assert la.direct == Endpoint("127.0.0.1", pb + 1)
    assert la.wg_endpoint == f"127.0.0.1:{pb}"  # WireGuard goes to the peer's WireGuard port
    # B pinged back on A's ping and on A's CallMeMaybe: it is direct as well
    assert lb.direct == Endpoint("127.0.0.1", pa + 1)
    assert [p.endpoint for p in b.wg_peers()] == [f"127.0.0.1:{pa}"]
    assert la.path.latency is not None and la.path.latency >= 0
    clock.t += 1


def test_silence_on_the_direct_path_falls_back_to_relay() -> None:
    asyncio.run(_silence_on_the_direct_path_falls_back_to_relay())


async def _silence_on_the_direct_path_falls_back_to_relay() -> None:
    async with pair() as p:
        await _silence_on_the_direct_path_falls_back_to_relay_body(*p)


async def _silence_on_the_direct_path_falls_back_to_relay_body(clock, derp, a, b, pa, pb) -> None:  # type: ignore[no-untyped-def]
    a.tick()
    await settle()
    la = a.peers[2]
    assert la.direct is not None
    b.close()  # B's disco socket is gone: heartbeats go unanswered
    for _ in range(int(TRUST_DURATION / 0.5) + 2):
        clock.t += 0.5
        a.tick()
        await settle(1)
    assert la.direct is None
    assert la.wg_endpoint == f"127.0.0.1:{la.relay_port}"
    assert [s for _, s in la.switches] == [la.switches[0][1], "relay"]


def test_wireguard_datagrams_cross_the_relay_both_ways() -> None:
    asyncio.run(_wireguard_datagrams_cross_the_relay_both_ways())


async def _wireguard_datagrams_cross_the_relay_both_ways() -> None:
    async with pair() as p:
        await _wireguard_datagrams_cross_the_relay_both_ways_body(*p)


async def _wireguard_datagrams_cross_the_relay_both_ways_body(clock, derp, a, b, pa, pb) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    # stand-ins for the two WireGuard sockets
    got: dict[str, asyncio.Queue[tuple[bytes, tuple[str, int]]]] = {"a": asyncio.Queue(), "b": asyncio.Queue()}

    class P(asyncio.DatagramProtocol):
        def __init__(self, q: asyncio.Queue[tuple[bytes, tuple[str, int]]]) -> None:
            self.q = q

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.q.put_nowait((data, addr))

    wga, _ = await loop.create_datagram_endpoint(lambda: P(got["a"]), local_addr=("127.0.0.1", pa))
    wgb, _ = await loop.create_datagram_endpoint(lambda: P(got["b"]), local_addr=("127.0.0.1", pb))
    try:
        # A's WireGuard sends to B's relay socket on A's side; it arrives at B's WireGuard from A's relay socket on B
        wga.sendto(b"\x01\x00\x00\x00handshake", ("127.0.0.1", a.peers[2].relay_port))
        data, src = await asyncio.wait_for(got["b"].get(), 2)
        assert data == b"\x01\x00\x00\x00handshake"
        assert src == ("127.0.0.1", b.peers[1].relay_port)
        wgb.sendto(b"\x02\x00\x00\x00reply", src)
        data, src = await asyncio.wait_for(got["a"].get(), 2)
        assert (data, src) == (b"\x02\x00\x00\x00reply", ("127.0.0.1", a.peers[2].relay_port))
        assert len(derp.sent) == 2
        # anyone but WireGuard writing to a relay socket is ignored (no open relay into the mesh)
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stranger.sendto(b"spoof", ("127.0.0.1", a.peers[2].relay_port))
        stranger.close()
        await settle()
        assert len(derp.sent) == 2
    finally:
        wga.close()
        wgb.close()


def test_disco_from_a_stranger_is_not_answered() -> None:
    asyncio.run(_stranger())


async def _stranger() -> None:
    async with pair() as p:
        await _stranger_body(*p)


async def _stranger_body(clock, derp, a, b, pa, pb) -> None:  # type: ignore[no-untyped-def]
    from meshctl.agent import disco

    stranger_key = DiscoPrivateKey.generate()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.3)
    s.bind(("127.0.0.1", 0))
    try:
        s.sendto(disco.seal_packet(stranger_key, a.disco_key.public_key(), disco.Ping(b"x" * 12)),
                 ("127.0.0.1", pa + 1))
        await settle(10)
        with pytest.raises(TimeoutError):
            s.recvfrom(100)
    finally:
        s.close()


def test_peer_removed_from_netmap_loses_its_relay_socket() -> None:
    asyncio.run(_peer_removed_from_netmap_loses_its_relay_socket())


async def _peer_removed_from_netmap_loses_its_relay_socket() -> None:
    async with pair() as p:
        await _peer_removed_from_netmap_loses_its_relay_socket_body(*p)


async def _peer_removed_from_netmap_loses_its_relay_socket_body(clock, derp, a, b, pa, pb) -> None:  # type: ignore[no-untyped-def]
    port = a.peers[2].relay_port
    await a.set_peers([])
    assert a.peers == {} and a.wg_peers() == []
    await settle()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))  # the port is free again
    s.close()
