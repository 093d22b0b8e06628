"""Helpers for the DERP integration tests: run a real relay on 127.0.0.1, connect real clients to it,
and speak raw DERP over a socket where a test needs to misbehave."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from meshctl.derp.client import DerpClient
from meshctl.derp.frames import FrameReader, FrameType, RecvPacket
from meshctl.derp.handshake import ClientInfo, parse_server_key, seal_client_info
from meshctl.derp.http import parse_response_head, upgrade_request
from meshctl.derp.server import DerpServer
from meshctl.keys import DerpPrivateKey, DerpPublicKey, NodePrivateKey, NodePublicKey

T = TypeVar("T")


def run(coro_fn: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
    """Run one async test body with an overall deadline, so a hang fails instead of blocking CI."""
    async def main() -> T:
        return await asyncio.wait_for(coro_fn(), timeout)
    return asyncio.run(main())


@contextlib.asynccontextmanager
async def relay(**kwargs: Any) -> AsyncIterator[tuple[DerpServer, str]]:
    server = DerpServer(kwargs.pop("key", None) or DerpPrivateKey.generate(), **kwargs)
    _, port = await server.listen("127.0.0.1", 0)
    try:
        yield server, f"http://127.0.0.1:{port}/derp"
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def client(url: str, key: NodePrivateKey | None = None, **kwargs: Any) -> AsyncIterator[DerpClient]:
    c = DerpClient(url, key or NodePrivateKey.generate(), **kwargs)
    await c.connect()
    try:
        yield c
    finally:
        await c.close()


def pub(c: DerpClient) -> NodePublicKey:
    key = c._key.public_key()
    assert isinstance(key, NodePublicKey)
    return key


async def recv_packet(c: DerpClient, timeout: float = 3.0) -> RecvPacket:
    """The next RecvPacket, skipping other events."""
    async def loop() -> RecvPacket:
        while True:
            ev = await c.recv()
            if isinstance(ev, RecvPacket):
                return ev
    return await asyncio.wait_for(loop(), timeout)


async def assert_pair_works(url: str, payload: bytes = b"still here") -> None:
    """A fresh pair of clients can still exchange a packet both ways: the server keeps serving."""
    async with client(url) as a, client(url) as b:
        await a.send(pub(b), payload)
        got = await recv_packet(b)
        assert (got.src, got.data) == (pub(a), payload)
        await b.send(pub(a), payload[::-1])
        assert (await recv_packet(a)).data == payload[::-1]


class RawConn:
    """A DERP connection driven by hand (for misbehaving clients)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.frames = FrameReader(limit=1 << 20)
        self.server_key: DerpPublicKey | None = None
        self.pending: list[tuple[int, bytes]] = []

    @classmethod
    async def open(cls, url: str) -> RawConn:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def upgrade(self) -> DerpPublicKey:
        self.writer.write(upgrade_request("127.0.0.1"))
        buf = b""
        while (parsed := parse_response_head(buf)) is None:
            chunk = await self.reader.read(4096)
            assert chunk, "server closed during upgrade"
            buf += chunk
        head, used = parsed
        assert head.status == 101
        self.frames.feed(buf[used:])
        ftype, payload = await self.read_frame()
        assert ftype == FrameType.SERVER_KEY
        self.server_key = parse_server_key(payload)
        return self.server_key

    async def handshake(self, key: NodePrivateKey, info: ClientInfo | None = None) -> None:
        server_key = await self.upgrade()
        self.writer.write(seal_client_info(key, server_key, info or ClientInfo()))
        ftype, _ = await self.read_frame()
        assert ftype == FrameType.SERVER_INFO

    async def read_frame(self, timeout: float = 3.0) -> tuple[int, bytes]:
        while True:
            self.pending += [(f.type, f.payload) for f in self.frames.frames()]
            if self.pending:
                return self.pending.pop(0)
            chunk = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not chunk:
                raise EOFError("server closed the connection")
            self.frames.feed(chunk)

    async def closed_by_server(self, timeout: float = 3.0) -> bool:
        """True once the server has closed the connection (reads until EOF or reset)."""
        async def drain() -> None:
            while await self.reader.read(65536):
                pass
        try:
            await asyncio.wait_for(drain(), timeout)
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.writer.close()
