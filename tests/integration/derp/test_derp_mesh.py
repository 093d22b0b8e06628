"""Regional mesh with two real relays on loopback: a client on A reaches a client on B through
ForwardPacket; the link learns and forgets keys from PeerPresent/PeerGone; a dropped link is re-dialled."""

from __future__ import annotations

import asyncio

import pytest

from meshctl.derp.mesh import MeshLink
from meshctl.derp.server import DerpServer
from meshctl.keys import DerpPrivateKey, NodePrivateKey

from .derp_helpers import client, pub, recv_packet, run

pytestmark = pytest.mark.integration

MESH_KEY = "5e" * 32


async def _until(cond: object, timeout: float = 5.0) -> None:
    assert callable(cond)
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def _start(key: DerpPrivateKey, port: int = 0) -> tuple[DerpServer, str]:
    server = DerpServer(key, mesh_key=MESH_KEY)
    _, bound = await server.listen("127.0.0.1", port)
    return server, f"http://127.0.0.1:{bound}/derp"


def test_client_on_a_reaches_client_on_b_through_the_mesh() -> None:
    async def body() -> None:
        ka, kb = DerpPrivateKey.generate(), DerpPrivateKey.generate()
        sa, url_a = await _start(ka)
        sb, url_b = await _start(kb)
        # each relay dials every relay of the region, itself included (the self link drops out)
        links = [MeshLink(sa, u, ka, MESH_KEY, backoff_initial=0.05) for u in (url_a, url_b)]
        links += [MeshLink(sb, u, kb, MESH_KEY, backoff_initial=0.05) for u in (url_a, url_b)]
        for link in links:
            await link.start()
        try:
            async with client(url_a) as alice, client(url_b) as bob:
                await _until(lambda: pub(bob).raw in sa.forwarders and pub(alice).raw in sb.forwarders)
                await _until(lambda: links[0].is_self and links[3].is_self)
                await alice.send(pub(bob), b"across the region")
                got = await recv_packet(bob)
                assert (got.src, got.data) == (pub(alice), b"across the region")
                await bob.send(pub(alice), b"and back")
                assert (await recv_packet(alice)).data == b"and back"
                assert sa.stats.packets_mesh_forwarded == 1 and sb.stats.packets_forwarded == 1
                bob_key = pub(bob).raw
            # bob left B: A forgets the route, and a packet for bob is now "not here"
            await _until(lambda: bob_key not in sa.forwarders)
        finally:
            for link in links:
                await link.close()
            await sa.close()
            await sb.close()
    run(body)


def test_mesh_link_is_redialled_after_the_peer_restarts() -> None:
    async def body() -> None:
        ka, kb = DerpPrivateKey.generate(), DerpPrivateKey.generate()
        sa, url_a = await _start(ka)
        sb, url_b = await _start(kb)
        port_b = int(url_b.rsplit(":", 1)[1].split("/")[0])
        link = MeshLink(sa, url_b, ka, MESH_KEY, backoff_initial=0.05, backoff_max=0.2)
        await link.start()
        try:
            async with client(url_b) as bob:
                await _until(lambda: pub(bob).raw in sa.forwarders)
            await sb.close()
            await _until(lambda: not link.connected)
            assert sa.forwarders == {}  # a dropped link forgets every key it announced
            sb, _ = await _start(kb, port_b)
            async with client(url_a) as alice, client(url_b) as bob2:
                await _until(lambda: pub(bob2).raw in sa.forwarders, timeout=10)
                await alice.send(pub(bob2), b"after restart")
                assert (await recv_packet(bob2)).data == b"after restart"
        finally:
            await link.close()
            await sa.close()
            await sb.close()
    run(body)


def test_forwarded_packets_go_one_hop_only() -> None:
    async def body() -> None:
        ka, kb = DerpPrivateKey.generate(), DerpPrivateKey.generate()
        sb, url_b = await _start(kb)
        from meshctl.derp.client import DerpClient
        from meshctl.keys import NodePrivateKey
        mesh = DerpClient(url_b, ka, mesh_key=MESH_KEY)
        await mesh.connect()
        try:
            absent = NodePrivateKey.generate().public_key()
            await mesh.forward(NodePrivateKey.generate().public_key(), absent, b"nowhere")
            await mesh.ping()
            assert sb.stats.drops["unknown_dest_on_fwd"] == 1
            assert sb.stats.packets_mesh_forwarded == 0
        finally:
            await mesh.close()
            await sb.close()
    run(body)


def test_overlap_window_accepts_old_and_new_mesh_keys() -> None:
    old, new = "01" * 32, "02" * 32

    async def body() -> None:
        server = DerpServer(DerpPrivateKey.generate(), mesh_key=[new, old])
        _, port = await server.listen("127.0.0.1", 0)
        url = f"http://127.0.0.1:{port}/derp"
        from meshctl.derp.client import DerpClient
        from meshctl.derp.errors import AdmissionDeniedError
        try:
            for key in (old, new):
                c = DerpClient(url, DerpPrivateKey.generate(), mesh_key=key, watch_conns=True)
                await c.connect()
                await c.ping()
                await c.close()
            with pytest.raises(AdmissionDeniedError):
                await DerpClient(url, DerpPrivateKey.generate(), mesh_key="03" * 32).connect()
            assert server.stats.clients_mesh == 0 and server.stats.refused["bad_mesh_key"] == 1
        finally:
            await server.close()
    run(body)


def test_watch_conns_lists_present_clients_then_streams_changes() -> None:
    from meshctl.derp.client import DerpClient
    from meshctl.derp.frames import PeerGone, PeerGoneReason, PeerPresent, PeerPresentFlags

    async def body() -> None:
        server, url = await _start(DerpPrivateKey.generate())
        try:
            async with client(url) as early:
                watcher = DerpClient(url, DerpPrivateKey.generate(), mesh_key=MESH_KEY, watch_conns=True)
                await watcher.connect()
                first = await asyncio.wait_for(watcher.recv(), 3)
                assert isinstance(first, PeerPresent) and first.key == pub(early)
                assert first.flags == PeerPresentFlags.REGULAR and str(first.ip) == "127.0.0.1" and first.port > 0
                async with client(url) as late:
                    ev = await asyncio.wait_for(watcher.recv(), 3)
                    assert isinstance(ev, PeerPresent) and ev.key == pub(late)
                    late_key = pub(late)
                assert await asyncio.wait_for(watcher.recv(), 3) == PeerGone(late_key, PeerGoneReason.DISCONNECTED)
                await watcher.close()
        finally:
            await server.close()
    run(body)


def test_close_peer_from_a_mesh_peer_disconnects_that_client() -> None:
    from meshctl.derp.client import DerpClient
    from meshctl.derp.errors import DerpClosedError

    async def body() -> None:
        server, url = await _start(DerpPrivateKey.generate())
        try:
            async with client(url) as victim, client(url) as bystander:
                mesh = DerpClient(url, DerpPrivateKey.generate(), mesh_key=MESH_KEY)
                await mesh.connect()
                await mesh.close_peer(pub(victim))
                with pytest.raises(DerpClosedError):
                    await asyncio.wait_for(victim.recv(), 3)
                await mesh.close_peer(NodePrivateKey.generate().public_key())  # unknown key: nothing happens
                assert await bystander.ping() < 1.0
                assert pub(victim).raw not in server.clients
                await mesh.close()
        finally:
            await server.close()
    run(body)
