"""Bad input against a real relay: each test asserts the offending connection is closed (and how it is
counted) while another pair of clients keeps working on the same server."""

from __future__ import annotations

import asyncio
import struct
import time

import pytest

from meshctl.derp.client import DerpClient
from meshctl.derp.errors import AdmissionDeniedError, BadMagicError, HandshakeError
from meshctl.derp.frames import MAX_PACKET_SIZE, FrameType, frame_header
from meshctl.derp.handshake import ClientInfo, seal_client_info
from meshctl.derp.http import upgrade_response
from meshctl.keys import DerpPrivateKey, NodePrivateKey

from .derp_helpers import RawConn, assert_pair_works, client, pub, recv_packet, relay, run

pytestmark = pytest.mark.integration


def test_garbage_after_the_upgrade_closes_only_that_connection() -> None:
    async def body() -> None:
        async with relay() as (server, url):
            raw = await RawConn.open(url)
            await raw.upgrade()
            raw.writer.write(b"\x99\x00\x00\x00\x04junk")  # not a ClientInfo
            assert await raw.closed_by_server()
            assert server.stats.refused["DerpProtocolError"] == 1
            await assert_pair_works(url)
    run(body)


def test_length_over_the_limit_is_refused_before_the_body() -> None:
    async def body() -> None:
        async with relay() as (server, url):
            raw = await RawConn.open(url)
            await raw.upgrade()
            raw.writer.write(b"\x02\xff\xff\xff\xff")  # a 4 GiB ClientInfo: header only, body never sent
            assert await raw.closed_by_server()
            assert server.stats.refused["FrameTooLargeError"] == 1
            # after the handshake the limit is a packet plus keys
            raw2 = await RawConn.open(url)
            await raw2.handshake(NodePrivateKey.generate())
            raw2.writer.write(frame_header(FrameType.SEND_PACKET, MAX_PACKET_SIZE + 100))
            assert await raw2.closed_by_server()
            assert server.stats.refused["FrameTooLargeError"] == 2
            await assert_pair_works(url)
    run(body)


def test_truncated_frame_then_eof() -> None:
    async def body() -> None:
        async with relay() as (server, url), client(url) as watcher:
            raw = await RawConn.open(url)
            key = NodePrivateKey.generate()
            await raw.handshake(key)
            raw.writer.write(encode_frame_send(pub(watcher).raw, b"complete"))
            assert (await recv_packet(watcher)).data == b"complete"
            raw.writer.write(frame_header(FrameType.SEND_PACKET, 100) + pub(watcher).raw[:10])  # cut short
            raw.writer.write_eof()
            assert await raw.closed_by_server()
            await asyncio.sleep(0.05)
            assert key.public_key().raw not in server.clients
            await assert_pair_works(url)
    run(body)


def encode_frame_send(dst: bytes, data: bytes) -> bytes:
    return frame_header(FrameType.SEND_PACKET, 32 + len(data)) + dst + data


def test_client_info_box_that_fails_to_open() -> None:
    async def body() -> None:
        async with relay() as (server, url):
            raw = await RawConn.open(url)
            await raw.upgrade()
            wrong_server = DerpPrivateKey.generate().public_key()
            raw.writer.write(seal_client_info(NodePrivateKey.generate(), wrong_server, ClientInfo()))
            assert await raw.closed_by_server()
            assert server.stats.refused["HandshakeError"] == 1
            assert server.stats.clients_current == 0
            await assert_pair_works(url)
    run(body)


def test_send_packet_to_oneself_closes_the_sender() -> None:
    async def body() -> None:
        async with relay() as (server, url):
            raw = await RawConn.open(url)
            key = NodePrivateKey.generate()
            await raw.handshake(key)
            raw.writer.write(encode_frame_send(key.public_key().raw, b"loop"))
            assert await raw.closed_by_server()
            assert server.stats.refused["DerpProtocolError"] == 1
            await assert_pair_works(url)
    run(body)


def test_mesh_only_frames_from_a_regular_client_close_it() -> None:
    async def body() -> None:
        async with relay(mesh_key="ab" * 32) as (server, url):
            for frame in (b"\x10\x00\x00\x00\x00",  # WatchConns
                          b"\x0a\x00\x00\x00\x41" + bytes(65)):  # ForwardPacket
                raw = await RawConn.open(url)
                await raw.handshake(NodePrivateKey.generate())
                raw.writer.write(frame)
                assert await raw.closed_by_server()
            assert server.stats.refused["DerpProtocolError"] == 2
            await assert_pair_works(url)
    run(body)


def test_wrong_mesh_key_is_refused() -> None:
    async def body() -> None:
        async with relay(mesh_key="ab" * 32) as (server, url):
            c = DerpClient(url, NodePrivateKey.generate(), mesh_key="cd" * 32)
            with pytest.raises(AdmissionDeniedError, match="mesh key does not match"):
                await c.connect()
            assert server.stats.refused["bad_mesh_key"] == 1
            await assert_pair_works(url)
    run(body)


def test_slowloris_http_head_is_cut_at_the_handshake_deadline() -> None:
    async def body() -> None:
        async with relay(handshake_timeout=0.5) as (server, url):
            raw = await RawConn.open(url)
            start = time.monotonic()
            closed = False
            for byte in b"GET /derp HTTP/1.1\r\nHost: slow\r\n":
                try:
                    raw.writer.write(bytes([byte]))
                    await raw.writer.drain()
                except ConnectionError:
                    closed = True
                    break
                if raw.reader.at_eof():
                    closed = True
                    break
                await asyncio.sleep(0.05)
                if time.monotonic() - start > 1.0:
                    break
            assert closed or await raw.closed_by_server(1.0)
            assert time.monotonic() - start < 1.5
            assert server.stats.refused["handshake_timeout"] == 1
            await assert_pair_works(url)
    run(body)


def test_silent_client_after_upgrade_is_cut_at_the_deadline() -> None:
    async def body() -> None:
        async with relay(handshake_timeout=0.3) as (server, url):
            raw = await RawConn.open(url)
            await raw.upgrade()  # then never sends ClientInfo
            assert await raw.closed_by_server(2.0)
            assert server.stats.refused["handshake_timeout"] == 1
            await assert_pair_works(url)
    run(body)


def test_cap_on_unhandshaken_connections() -> None:
    async def body() -> None:
        async with relay(max_pending=2) as (server, url):
            idle = [await RawConn.open(url) for _ in range(2)]
            await asyncio.sleep(0.05)
            extra = await RawConn.open(url)
            assert await extra.closed_by_server(2.0)
            assert server.stats.refused["pending_cap"] == 1
            for conn in idle:
                conn.close()
            await asyncio.sleep(0.05)
            assert server.pending == 0
            await assert_pair_works(url)
    run(body)


def test_not_http_at_all_gets_400() -> None:
    async def body() -> None:
        async with relay() as (server, url):
            raw = await RawConn.open(url)
            raw.writer.write(b"\x16\x03\x01\x00\xa5 this is a TLS hello on the plain port\r\n\r\n")
            data = await asyncio.wait_for(raw.reader.read(), 3)
            assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
            assert server.stats.refused["HttpUpgradeError"] == 1
            await assert_pair_works(url)
    run(body)


def test_flood_into_a_stalled_reader_is_dropped_and_other_pairs_keep_working() -> None:
    async def body() -> None:
        async with relay(write_timeout=1.0) as (server, url), client(url) as flooder:
            stalled = await RawConn.open(url)
            stalled_key = NodePrivateKey.generate()
            await stalled.handshake(stalled_key)  # and then never reads again
            dst = stalled_key.public_key()
            packet = b"\x00" * 1400
            async with client(url) as a, client(url) as b:
                for i in range(20_000):  # ~28 MB at a reader that does not read
                    flooder.send_nowait(dst, packet)
                    if i % 500 == 0:
                        await flooder.send(dst, packet)  # let the loop breathe and apply backpressure
                        await a.send(pub(b), b"ping %d" % i)
                        assert (await recv_packet(b, 2.0)).data == b"ping %d" % i
                drops = server.stats.drops["queue_head"]
                assert drops > 0, "a full per-client queue must drop from the head"
                # the stalled connection is cut after the write timeout; memory held for it is released
                # (without reading from it: reading would un-stall it)
                for _ in range(100):
                    if dst.raw not in server.clients:
                        break
                    await asyncio.sleep(0.05)
                assert dst.raw not in server.clients
                assert server.stats.refused["write_timeout"] == 1
                await a.send(pub(b), b"after")
                assert (await recv_packet(b)).data == b"after"
    run(body, timeout=60)


def test_client_refuses_a_server_with_the_wrong_magic() -> None:
    async def fake_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(upgrade_response("00" * 32) + b"\x01\x00\x00\x00\x28" + b"NOTDERP!" + bytes(32))
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    async def body() -> None:
        srv = await asyncio.start_server(fake_server, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        try:
            c = DerpClient(f"http://127.0.0.1:{port}/derp", NodePrivateKey.generate())
            with pytest.raises(BadMagicError, match="want 44455250f09f9491"):
                await c.connect()
        finally:
            srv.close()
            await srv.wait_closed()
    run(body)


def test_client_refuses_a_frame_other_than_server_info() -> None:
    async def fake_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        key = DerpPrivateKey.generate().public_key()
        writer.write(upgrade_response(key.raw.hex()) + b"\x01\x00\x00\x00\x28" + "DERP🔑".encode() + key.raw)
        await reader.readexactly(5)
        writer.write(encode_frame_keepalive())
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    async def body() -> None:
        srv = await asyncio.start_server(fake_server, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        try:
            c = DerpClient(f"http://127.0.0.1:{port}/derp", NodePrivateKey.generate())
            with pytest.raises(HandshakeError, match="before ServerInfo"):
                await c.connect()
        finally:
            srv.close()
            await srv.wait_closed()
    run(body)


def encode_frame_keepalive() -> bytes:
    return struct.pack(">BI", FrameType.KEEP_ALIVE, 0)



def test_disco_has_its_own_queue_so_a_data_flood_cannot_push_it_out() -> None:
    import socket

    from meshctl.derp.frames import DISCO_MAGIC

    async def body() -> None:
        async with relay(write_timeout=10.0) as (server, url), client(url) as flooder:
            port = int(url.rsplit(":", 1)[1].split("/")[0])
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock)
            slow = RawConn(reader, writer)
            key = NodePrivateKey.generate()
            await slow.handshake(key)  # then stops reading for a while
            data = b"\x00" * 1400
            for i in range(8000):
                flooder.send_nowait(key.public_key(), data)
                if i % 200 == 0:
                    await flooder.send(key.public_key(), data)
            await flooder.ping()  # the flood has reached the relay: the slow reader's queue is full by now
            assert server.stats.drops["queue_head"] > 0
            await flooder.send(key.public_key(), DISCO_MAGIC + b"call-me-maybe")
            for _ in range(200):  # more than a queue's worth of data after the disco message
                await flooder.send(key.public_key(), data)
            await flooder.ping()
            disco_seen = False
            while not disco_seen:
                ftype, payload = await slow.read_frame(timeout=3.0)
                if ftype == FrameType.RECV_PACKET and payload[32:].startswith(DISCO_MAGIC):
                    disco_seen = True
            assert disco_seen
            slow.close()
    run(body, timeout=60)


def test_spraying_random_destinations_holds_no_per_key_state() -> None:
    async def body() -> None:
        async with relay() as (server, url), client(url) as sprayer, client(url) as b:
            for _ in range(2000):
                sprayer.send_nowait(NodePrivateKey.generate().public_key(), b"x")
            await sprayer.send(pub(b), b"real")
            assert (await recv_packet(b)).data == b"real"
            conn = server.clients[pub(sprayer).raw]
            assert conn.sent_to == {pub(b).raw}
            assert server.stats.drops["unknown_dest"] == 2000
            await assert_pair_works(url)
    run(body)
