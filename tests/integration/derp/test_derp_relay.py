"""A real relay on 127.0.0.1 with real clients: forwarding, ping, PeerGone, duplicate keys, keepalives,
the HTTP endpoints and TLS."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meshctl.derp.client import DerpClient
from meshctl.derp.errors import DerpClosedError, DerpConnectError, ServerKeyMismatchError
from meshctl.derp.frames import MAX_PACKET_SIZE, Health, KeepAlive, PeerGone, PeerGoneReason, RecvPacket, Restarting
from meshctl.derp.http import parse_response_head
from meshctl.derp.server import DerpServer
from meshctl.keys import DerpPrivateKey, NodePrivateKey

from .derp_helpers import client, pub, recv_packet, relay, run

pytestmark = pytest.mark.integration


def test_two_clients_exchange_packets_both_ways_in_order() -> None:
    async def body() -> None:
        async with relay() as (server, url), client(url) as a, client(url) as b:
            for i in range(200):
                await a.send(pub(b), b"a->b %d" % i)
            for i in range(200):
                got = await recv_packet(b)
                assert (got.src, got.data) == (pub(a), b"a->b %d" % i)
            big = bytes(range(256)) * (MAX_PACKET_SIZE // 256)
            await b.send(pub(a), big)
            got = await recv_packet(a)
            assert (got.src, got.data) == (pub(b), big)
            assert server.stats.packets_forwarded == 201
    run(body)


def test_ping_round_trip() -> None:
    async def body() -> None:
        async with relay() as (_, url), client(url) as a:
            rtt = await a.ping()
            assert 0 < rtt < 1.0
    run(body)


def test_pinned_server_key_mismatch_is_refused() -> None:
    async def body() -> None:
        async with relay() as (_, url):
            c = DerpClient(url, NodePrivateKey.generate(), server_key=DerpPrivateKey.generate().public_key())
            with pytest.raises(ServerKeyMismatchError, match="want pinned nodekey:"):
                await c.connect()
    run(body)


def test_peer_gone_not_here_is_rate_limited() -> None:
    async def body() -> None:
        async with relay() as (server, url), client(url) as a:
            absent = NodePrivateKey.generate().public_key()
            for _ in range(10):
                await a.send(absent, b"x")
            gones = []
            with pytest.raises(TimeoutError):
                while True:
                    gones.append(await asyncio.wait_for(a.recv(), 0.5))
            assert gones == [PeerGone(absent, PeerGoneReason.NOT_HERE)] * 3  # burst 3, then 1/s
            assert server.stats.drops["unknown_dest"] == 10
    run(body)


def test_peer_gone_disconnected_reaches_those_who_sent_to_it() -> None:
    async def body() -> None:
        async with relay() as (_, url), client(url) as a:
            async with client(url) as b:
                await a.send(pub(b), b"hi")
                await recv_packet(b)
                gone_key = pub(b)
            ev = await asyncio.wait_for(a.recv(), 3)
            assert ev == PeerGone(gone_key, PeerGoneReason.DISCONNECTED)
    run(body)


def test_duplicate_key_last_connection_wins_and_the_older_is_told() -> None:
    async def body() -> None:
        key = NodePrivateKey.generate()
        async with relay() as (server, url), client(url, key) as old, client(url) as sender, \
                client(url, key) as new:
            ev = await asyncio.wait_for(old.recv(), 3)
            assert isinstance(ev, Health) and "same node key" in ev.text
            with pytest.raises(DerpClosedError):
                await asyncio.wait_for(old.recv(), 3)
            await sender.send(key.public_key(), b"to the newest")
            assert (await recv_packet(new)).data == b"to the newest"
            assert server.stats.drops["dup_client"] == 1
            assert server.stats.clients_current == 2
    run(body)


def test_keepalive_and_note_preferred() -> None:
    async def body() -> None:
        async with relay(keepalive_interval=0.2, keepalive_jitter=0.05) as (server, url), \
                client(url, preferred=True) as a:
            assert await asyncio.wait_for(a.recv(), 3) == KeepAlive()
            assert server.stats.note_preferred == 1 and server.stats.clients_preferred == 1
            await a.note_preferred(False)
            await a.ping()  # ordered after NotePreferred on the same connection
            assert server.stats.clients_preferred == 0 and server.stats.note_preferred == 2
    run(body)


async def _http(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    data = b""
    while (parsed := parse_response_head(data)) is None:
        chunk = await asyncio.wait_for(reader.read(4096), 3)
        assert chunk, "closed before a response head"
        data += chunk
    head, used = parsed
    if head.status != 101:
        data += await asyncio.wait_for(reader.read(), 3)  # the server closes after a plain response
    writer.close()
    return head.status, head.headers, data[used:]


def test_http_endpoints() -> None:
    async def body() -> None:
        async with relay() as (server, url), client(url):
            status, _, content = await _http(url, b"GET /derp HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (status, content) == (426, b"DERP requires connection upgrade")
            status, headers, _ = await _http(url, b"GET /derp/probe HTTP/1.1\r\n\r\n")
            assert status == 200 and headers["access-control-allow-origin"] == "*"
            status, _, _ = await _http(url, b"HEAD /derp/latency-check HTTP/1.1\r\n\r\n")
            assert status == 200
            status, headers, _ = await _http(url, b"GET /generate_204 HTTP/1.1\r\nX-Tailscale-Challenge: ab-1\r\n\r\n")
            assert status == 204 and headers["x-tailscale-response"] == "response ab-1"
            status, _, content = await _http(url, b"GET /metrics HTTP/1.1\r\n\r\n")
            assert status == 200
            assert b"derp_clients 1.0" in content
            assert b'derp_packets_dropped_total{reason="queue_head"} 0.0' in content
            status, headers, _ = await _http(url, b"GET /derp HTTP/1.1\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n")
            assert status == 101
            assert headers["derp-version"] == "2"
            assert headers["derp-public-key"] == server.public_key.raw.hex()
            status, _, _ = await _http(url, b"GET /nope HTTP/1.1\r\n\r\n")
            assert status == 404
    run(body)


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_relay(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    async def body() -> None:
        server = DerpServer(DerpPrivateKey.generate())
        _, port = await server.listen("127.0.0.1", 0, ssl_context=server_ctx)
        url = f"https://127.0.0.1:{port}/derp"
        try:
            async with client(url, ssl_context=client_ctx) as a, client(url, ssl_context=client_ctx) as b:
                await a.send(pub(b), b"over tls")
                assert (await recv_packet(b)).data == b"over tls"
            # a self-signed relay pinned by its certificate hash (the DERP map's CertName "sha256-raw:<hex>")
            der = ssl.PEM_cert_to_DER_cert(cert.read_text())
            pin = "sha256-raw:" + hashlib.sha256(der).hexdigest()
            async with client(url, cert_name=pin) as a, client(url, cert_name=pin) as b:
                await a.send(pub(b), b"pinned")
                assert (await recv_packet(b)).data == b"pinned"
            with pytest.raises(DerpConnectError, match="does not match the pinned sha256-raw:"):
                async with client(url, cert_name="sha256-raw:" + "00" * 32):
                    pass
            # a client that does not trust the certificate fails with one clear error
            with pytest.raises(DerpConnectError, match="TLS failed"):
                async with client(url):
                    pass
        finally:
            await server.close()
    run(body)


def test_reconnecting_client_survives_a_server_restart() -> None:
    from meshctl.derp.client import Connected, Disconnected, ReconnectingDerpClient

    async def body() -> None:
        key = DerpPrivateKey.generate()
        server = DerpServer(key)
        _, port = await server.listen("127.0.0.1", 0)
        url = f"http://127.0.0.1:{port}/derp"
        me = NodePrivateKey.generate()
        rc = ReconnectingDerpClient(url, me, server_key=key.public_key(), preferred=True,
                                    backoff_initial=0.05, backoff_max=0.2)
        await rc.start()
        try:
            assert await rc.wait_connected(5)
            assert isinstance(await rc.recv(), Connected)
            await server.close(reconnect_in=0.1)
            assert await asyncio.wait_for(rc.recv(), 5) == Restarting(100, 30000)
            assert isinstance(await asyncio.wait_for(rc.recv(), 5), Disconnected)
            await rc.send(NodePrivateKey.generate().public_key(), b"while down")  # dropped, not raised
            assert rc.dropped == 1
            server = DerpServer(key)
            await server.listen("127.0.0.1", port)
            assert await asyncio.wait_for(rc.recv(), 10) == Connected(key.public_key())
            assert rc.connects == 2
            assert server.stats.clients_preferred == 1  # NotePreferred is re-sent on reconnect
            async with client(url) as peer:
                await peer.send(me.public_key(), b"after restart")
                ev = await asyncio.wait_for(rc.recv(), 3)
                assert ev == RecvPacket(pub(peer), b"after restart")
                await rc.send(pub(peer), b"reply")
                assert (await recv_packet(peer)).data == b"reply"
                assert await rc.ping() < 1.0
        finally:
            await rc.close()
            await server.close()
    run(body)


def test_a_silent_server_counts_as_dead_and_keepalives_keep_it_alive() -> None:
    async def body() -> None:
        async with relay() as (_, url), client(url, dead_after=0.3) as quiet:  # default 60 s keepalive
            with pytest.raises(DerpClosedError, match=r"silent for 0\.3s"):
                await asyncio.wait_for(quiet.recv(), 3)
        async with relay(keepalive_interval=0.1, keepalive_jitter=0.01) as (_, url), \
                client(url, dead_after=0.3) as kept:
            for _ in range(8):  # 8 keepalives ~ 0.8 s, well past dead_after
                assert await asyncio.wait_for(kept.recv(), 1) == KeepAlive()
            assert kept.connected
    run(body)


def test_mixed_bursts_arrive_complete_and_in_order() -> None:
    """Runs of same-sized packets to one peer take the relay's strided rewrite; mixed sizes, peers, pings
    and absent keys take the per-frame path. Every receiver must get exactly what was sent to it, in order."""
    import random

    rng = random.Random(4)

    async def body() -> None:
        async with relay() as (server, url), client(url) as s1, client(url) as s2, client(url) as r1, \
                client(url) as r2:
            receivers = [r1, r2]
            senders = {pub(s1): 0, pub(s2): 1}
            got: dict[tuple[int, int], list[bytes]] = {}

            async def collect(ri: int, r: DerpClient) -> None:
                while True:
                    ev = await r.recv()
                    if isinstance(ev, RecvPacket):
                        got.setdefault((senders[ev.src], ri), []).append(ev.data)

            tasks = [asyncio.create_task(collect(i, r)) for i, r in enumerate(receivers)]
            sent: dict[tuple[int, int], list[bytes]] = {}
            absent = NodePrivateKey.generate().public_key()
            try:
                for _ in range(80):
                    si, ri = rng.randrange(2), rng.randrange(2)
                    sender = (s1, s2)[si]
                    size = rng.choice([0, 1, 100, 1400, 1400, 1400, 9000])
                    for _ in range(rng.randint(1, 40)):
                        packet = b"%d:%d:%d:" % (si, ri, len(sent.get((si, ri), []))) + bytes(size)
                        assert sender.send_nowait(pub(receivers[ri]), packet)
                        sent.setdefault((si, ri), []).append(packet)
                    if rng.random() < 0.2:
                        assert sender.send_nowait(absent, b"nobody")
                    await sender.ping()  # drains this burst through the relay
                total = sum(len(v) for v in sent.values())
                for _ in range(200):
                    if sum(len(v) for v in got.values()) >= total:
                        break
                    await asyncio.sleep(0.02)
            finally:
                for t in tasks:
                    t.cancel()
            assert not (set(server.stats.drops) - {"unknown_dest"}), server.stats.drops
            assert got == sent
    run(body, timeout=60)
