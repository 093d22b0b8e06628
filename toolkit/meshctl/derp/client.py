"""DERP client library (asyncio): what the node agent (and the regional mesh) use to talk to a relay.

Speaks Tailscale's DERP v2 over HTTP(S) upgrade, so it works against meshctl's relay and derper alike.

Public API (also exported from `meshctl.derp`)::

    client = DerpClient(url, private_key, *, server_key=None, mesh_key=None, watch_conns=False,
                        ssl_context=None, preferred=False, clock=time.monotonic,
                        connect_timeout=10.0, app_name="meshctl", cert_name="",
                        dead_after=120.0)
        url           "http://10.0.0.2:8443/derp" or "https://derp1.example.com/derp" (port 80/443 default)
        private_key   NodePrivateKey (a mesh peer passes its DerpPrivateKey)
        server_key    DerpPublicKey pinned from the DERP map; a mismatch raises ServerKeyMismatchError
        mesh_key      64 hex; makes this a trusted mesh peer (WatchConns / ForwardPacket / ClosePeer)
        watch_conns   send WatchConns after the handshake (mesh peers only)
        preferred     send NotePreferred(True) after the handshake (this is the node's home DERP)
        dead_after    seconds without any frame after which the connection counts as dead [120 = 2x keepalive]
        cert_name     the DERP map node's CertName: a TLS name to verify instead of the URL's host, or
                      "sha256-raw:<hex>" to pin a self-signed certificate by the SHA-256 of its DER bytes
    await client.connect()                    TCP(+TLS) + HTTP upgrade + handshake. Raises DerpConnectError,
                                              HttpUpgradeError, ServerKeyMismatchError, AdmissionDeniedError,
                                              HandshakeError / other DerpProtocolError.
    await client.send(dst: NodePublicKey, packet: bytes)   -> None; DerpClosedError once closed
    await client.recv() -> DerpEvent          next event; DerpClosedError (or the protocol error) when the
                                              connection ends. Events are the frame dataclasses:
                                              RecvPacket(src, data) | PeerGone(key, reason) |
                                              PeerPresent(key, ip, port, flags) | Pong(data) | Health(text) |
                                              KeepAlive() | Restarting(reconnect_in_ms, try_for_ms)
                                              (server Pings are answered automatically, not surfaced)
    await client.ping(timeout=5.0) -> float   round trip in seconds; PingTimeoutError
    await client.note_preferred(preferred)
    await client.forward(src, dst, packet)    mesh peers: ForwardPacket
    client.send_nowait(dst, packet) -> bool   no await; False = dropped (socket backed up > 4 MiB, or closed)
    client.forward_nowait(src, dst, packet) -> bool
    await client.close_peer(key)              mesh peers: ClosePeer
    await client.close()
    client.server_public_key: DerpPublicKey | None      known after connect()
    client.server_info: ServerInfo | None
    client.connected: bool

    rc = ReconnectingDerpClient(url, private_key, <same keyword arguments>, backoff_initial=0.5,
                                backoff_max=30.0, rng=random.Random())
    await rc.start()                          returns at once; connects in the background, forever
    await rc.wait_connected(timeout=None) -> bool
    await rc.send(dst, packet)                drops the packet (counted in rc.dropped) while disconnected
    await rc.recv() -> DerpEvent | Connected(server_key) | Disconnected(reason)
    rc.send_nowait(dst, packet) -> bool / rc.forward_nowait(src, dst, packet) -> bool
    await rc.ping(timeout) / rc.note_preferred(p) (remembered across reconnects) / rc.close()
    rc.connected, rc.server_public_key, rc.connects (number of successful connects)

Reconnects use exponential backoff with jitter (0.5 s doubling to 30 s), reset after a connection that
stayed up; after a Restarting frame the client comes back when the server asked it to. The background
reader applies backpressure: if nobody calls recv(), reading stops once 1024 events are waiting, which
also delays Pongs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import LocalProtocolError
from ..keys import DerpPrivateKey, DerpPublicKey, NodePrivateKey, NodePublicKey
from .dial import ClientHandshake
from .errors import (
    DerpClosedError,
    DerpConnectError,
    DerpError,
    PingTimeoutError,
)
from .frames import (
    KEY_LEN,
    MAX_PACKET_SIZE,
    ClosePeer,
    ForwardPacket,
    Frame,
    FrameReader,
    FrameType,
    Health,
    KeepAlive,
    NotePreferred,
    PeerGone,
    PeerPresent,
    Ping,
    Pong,
    RecvPacket,
    Restarting,
    WatchConns,
    encode_frame,
    frame_header,
    parse_frame,
)
from .handshake import ClientInfo, ServerInfo

__all__ = [
    "Connected",
    "DerpClient",
    "DerpEvent",
    "Disconnected",
    "ReconnectingDerpClient",
    "parse_derp_url",
]

_READ_CHUNK = 1 << 16
_EVENT_QUEUE = 1024
KEEPALIVE_DEAD_AFTER = 120.0  # 2x the server's 60 s keepalive
NOWAIT_BUFFER_LIMIT = 4 << 20  # send_nowait/forward_nowait drop above this much unsent data


@dataclass(frozen=True, slots=True)
class Connected:
    """ReconnectingDerpClient: a (re)connection completed its handshake."""

    server_key: DerpPublicKey


@dataclass(frozen=True, slots=True)
class Disconnected:
    """ReconnectingDerpClient: the connection ended; it will be re-dialled."""

    reason: str


DerpEvent = RecvPacket | PeerGone | PeerPresent | Pong | Health | KeepAlive | Restarting
ReconnectEvent = DerpEvent | Connected | Disconnected


def _parse_cert_pin(url: str, cert_name: str) -> str | None:
    """`sha256-raw:<64 hex>` (the DERP map's CertName for self-signed relays) → the hex digest, else None."""
    if not cert_name.startswith("sha256-raw:"):
        return None
    digest = cert_name.removeprefix("sha256-raw:").strip().lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise DerpConnectError(url, f"CertName {cert_name!r}: want sha256-raw: followed by 64 hex characters")
    return digest


def parse_derp_url(url: str) -> tuple[bool, str, int, str]:
    """(tls, host, port, path) from `http(s)://host[:port][/path]`; the path defaults to /derp."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DerpConnectError(url, "want a URL like https://host/derp or http://host:port/derp")
    tls = parts.scheme == "https"
    try:
        port = parts.port or (443 if tls else 80)
    except ValueError:
        raise DerpConnectError(url, "port is not a number in 1-65535") from None
    return tls, parts.hostname, port, parts.path or "/derp"


class DerpClient:
    """One DERP connection. Not reusable: after close() or a failure, make a new one."""

    def __init__(self, url: str, private_key: NodePrivateKey | DerpPrivateKey, *,
                 server_key: DerpPublicKey | None = None, mesh_key: str | None = None, watch_conns: bool = False,
                 ssl_context: ssl.SSLContext | None = None, preferred: bool = False,
                 clock: Callable[[], float] = time.monotonic, connect_timeout: float = 10.0,
                 app_name: str = "meshctl", cert_name: str = "", dead_after: float = KEEPALIVE_DEAD_AFTER) -> None:
        self.url = url
        self._dead_after = dead_after
        self._tls, self._host, self._port, self._path = parse_derp_url(url)
        self._cert_name = cert_name
        self._cert_pin = _parse_cert_pin(url, cert_name)
        self._key = private_key
        self._pinned = server_key
        self._mesh_key = mesh_key
        self._watch = watch_conns
        self._ssl = ssl_context
        self._preferred = preferred
        self._clock = clock
        self._connect_timeout = connect_timeout
        self._app_name = app_name
        self.server_public_key: DerpPublicKey | None = None
        self.server_info: ServerInfo | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._frames = FrameReader()
        self._pending: list[Frame] = []
        self._events: asyncio.Queue[DerpEvent | BaseException] = asyncio.Queue(_EVENT_QUEUE)
        self._pings: dict[bytes, asyncio.Future[None]] = {}
        self._read_task: asyncio.Task[None] | None = None
        self._closed = False
        self._error: BaseException | None = None

    @property
    def connected(self) -> bool:
        return self._read_task is not None and not self._closed and self._error is None

    # -- connecting ---------------------------------------------------------------------------------

    async def connect(self) -> None:
        if self._writer is not None:
            raise LocalProtocolError("DerpClient.connect() called twice; make a new client to reconnect")
        try:
            async with asyncio.timeout(self._connect_timeout):
                await self._connect()
        except TimeoutError:
            await self._abort()
            raise DerpConnectError(self.url, f"no handshake within {self._connect_timeout:g}s") from None
        except BaseException:
            await self._abort()
            raise
        self._read_task = asyncio.create_task(self._read_loop(), name=f"derp-read {self.url}")

    async def _connect(self) -> None:
        ctx: ssl.SSLContext | None = None
        server_hostname = self._host
        if self._tls:
            if self._cert_pin is not None and self._ssl is None:
                # a self-signed relay pinned by its certificate's hash: the pin replaces CA and name checks
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            else:
                ctx = self._ssl or ssl.create_default_context()
                if self._cert_name and self._cert_pin is None:
                    server_hostname = self._cert_name
        try:
            self._reader, self._writer = await asyncio.open_connection(
                self._host, self._port, ssl=ctx, server_hostname=server_hostname if ctx else None,
                limit=_READ_CHUNK)
        except ssl.SSLError as e:
            raise DerpConnectError(self.url, f"TLS failed: {e.reason or e}") from None
        except OSError as e:
            raise DerpConnectError(self.url, e.strerror or str(e)) from None
        if self._cert_pin is not None:
            ssl_object = self._writer.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            got = hashlib.sha256(der).hexdigest() if der else "none"
            if got != self._cert_pin:
                raise DerpConnectError(self.url, f"TLS certificate sha256 {got} does not match the pinned "
                                                 f"sha256-raw:{self._cert_pin}")
        host = self._host if ":" not in self._host else f"[{self._host}]"
        hs = ClientHandshake(self.url, f"{host}:{self._port}", self._path, self._key,
                             ClientInfo(mesh_key=self._mesh_key, app_name=self._app_name), pinned=self._pinned)
        self._writer.write(hs.start())
        while not hs.done:
            try:
                chunk = await self._reader.read(_READ_CHUNK)
            except OSError as e:
                raise DerpConnectError(self.url, f"connection failed during the handshake: {e.strerror or e}") \
                    from None
            if not chunk:
                hs.eof()
            out = hs.receive(chunk)
            if out:
                self._writer.write(out)
        assert hs.server_key is not None
        self.server_public_key, self.server_info = hs.server_key, hs.server_info
        # after the handshake no legitimate frame is larger than a packet plus its keys
        self._frames = FrameReader(limit=MAX_PACKET_SIZE + 2 * KEY_LEN + 64)
        if hs.rest:
            self._frames.feed(hs.rest)
        if self._preferred:
            self._writer.write(encode_frame(NotePreferred(True)))
        if self._watch:
            self._writer.write(encode_frame(WatchConns()))
        await self._writer.drain()

    async def _next_frame(self, waiting_for: str) -> Frame:
        assert self._reader is not None
        while not self._pending:
            self._pending = self._frames.frames()
            if self._pending:
                break
            chunk = await self._reader.read(_READ_CHUNK)
            if not chunk:
                self._frames.check_eof()
                raise DerpClosedError(f"DERP server {self.url} closed the connection (waiting for {waiting_for})")
            self._frames.feed(chunk)
        return self._pending.pop(0) if len(self._pending) > 1 else self._pending.pop()

    # -- steady state -------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            while True:
                # asyncio.timeout, not wait_for: no extra task, so cancelling this loop cannot strand a read
                try:
                    async with asyncio.timeout(self._dead_after):
                        frame = await self._next_frame("frames")
                except TimeoutError:
                    raise DerpClosedError(f"DERP server {self.url} silent for {self._dead_after:g}s") from None
                ftype = frame.type
                if ftype == FrameType.PING:
                    self._write(encode_frame(Pong(frame.payload[:8])))
                    continue
                msg = parse_frame(ftype, frame.payload)
                if isinstance(msg, Pong):
                    fut = self._pings.pop(msg.data, None)
                    if fut is not None:
                        if not fut.done():
                            fut.set_result(None)
                        continue
                if isinstance(msg, RecvPacket | PeerGone | PeerPresent | Pong | Health | KeepAlive | Restarting):
                    await self._events.put(msg)
                # anything else (unknown types, frames meant for servers) is skipped
        except asyncio.CancelledError:
            raise
        except (DerpError, OSError, ValueError) as e:
            err: BaseException = e
            if isinstance(e, OSError):
                err = DerpClosedError(f"DERP connection to {self.url} failed: {e.strerror or e}")
            self._error = err
            for fut in self._pings.values():
                if not fut.done():
                    fut.set_exception(DerpClosedError(str(err)))
            self._pings.clear()
            await self._events.put(err)

    def _write(self, data: bytes) -> None:
        if self._closed or self._writer is None or self._error is not None:
            raise DerpClosedError(f"DERP connection to {self.url} is closed")
        self._writer.write(data)

    async def _write_drain(self, data: bytes) -> None:
        self._write(data)
        assert self._writer is not None
        try:
            await self._writer.drain()
        except (OSError, RuntimeError) as e:
            raise DerpClosedError(f"DERP connection to {self.url} failed: {e}") from None

    async def send(self, dst: NodePublicKey, packet: bytes) -> None:
        if len(packet) > MAX_PACKET_SIZE:
            raise LocalProtocolError(f"DERP packet is {len(packet)} bytes, limit {MAX_PACKET_SIZE}")
        await self._write_drain(b"".join((frame_header(FrameType.SEND_PACKET, KEY_LEN + len(packet)),
                                          dst.raw, packet)))

    async def forward(self, src: NodePublicKey, dst: NodePublicKey, packet: bytes) -> None:
        await self._write_drain(encode_frame(ForwardPacket(src, dst, packet)))

    def send_nowait(self, dst: NodePublicKey | bytes, packet: bytes) -> bool:
        """Queue a SendPacket without waiting; False (packet dropped) if the socket is backed up or closed."""
        return self._nowait(FrameType.SEND_PACKET, (bytes(dst), packet))

    def forward_nowait(self, src: NodePublicKey | bytes, dst: NodePublicKey | bytes, packet: bytes) -> bool:
        """Mesh peers: queue a ForwardPacket without waiting; False if dropped."""
        return self._nowait(FrameType.FORWARD_PACKET, (bytes(src), bytes(dst), packet))

    def _nowait(self, ftype: FrameType, parts: tuple[bytes, ...]) -> bool:
        writer = self._writer
        if writer is None or self._closed or self._error is not None or writer.is_closing():
            return False
        if writer.transport.get_write_buffer_size() > NOWAIT_BUFFER_LIMIT:
            return False
        length = sum(len(p) for p in parts)
        if length - KEY_LEN * (len(parts) - 1) > MAX_PACKET_SIZE:
            raise LocalProtocolError(f"DERP packet is {len(parts[-1])} bytes, limit {MAX_PACKET_SIZE}")
        writer.write(b"".join((frame_header(ftype, length), *parts)))
        return True

    async def close_peer(self, key: NodePublicKey) -> None:
        await self._write_drain(encode_frame(ClosePeer(key)))

    async def note_preferred(self, preferred: bool) -> None:
        self._preferred = preferred
        await self._write_drain(encode_frame(NotePreferred(preferred)))

    async def recv(self) -> DerpEvent:
        if self._read_task is None:
            raise DerpClosedError(f"DERP client for {self.url} is not connected")
        if self._closed:
            raise DerpClosedError(f"DERP connection to {self.url} is closed")
        item = await self._events.get()
        if isinstance(item, BaseException):
            self._events.put_nowait(item)  # keep raising on later calls
            raise item
        return item

    async def ping(self, timeout: float = 5.0) -> float:
        data = os.urandom(8)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pings[data] = fut
        start = self._clock()
        try:
            await self._write_drain(encode_frame(Ping(data)))
            async with asyncio.timeout(timeout):
                await fut
        except TimeoutError:
            raise PingTimeoutError(self.url, timeout) from None
        finally:
            self._pings.pop(data, None)
        return self._clock() - start

    async def close(self) -> None:
        self._closed = True
        if self._read_task is not None:
            self._read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._read_task
        await self._abort()

    async def _abort(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
        self._closed = True


class ReconnectingDerpClient:
    """A DerpClient that re-dials with backoff and jitter forever, until close()."""

    def __init__(self, url: str, private_key: NodePrivateKey | DerpPrivateKey, *,
                 server_key: DerpPublicKey | None = None, mesh_key: str | None = None, watch_conns: bool = False,
                 ssl_context: ssl.SSLContext | None = None, preferred: bool = False,
                 clock: Callable[[], float] = time.monotonic, connect_timeout: float = 10.0,
                 app_name: str = "meshctl", cert_name: str = "", dead_after: float = KEEPALIVE_DEAD_AFTER,
                 backoff_initial: float = 0.5, backoff_max: float = 30.0, rng: random.Random | None = None) -> None:
        self.url = url
        parse_derp_url(url)  # fail fast on a bad URL
        _parse_cert_pin(url, cert_name)
        self._cert_name = cert_name
        self._dead_after = dead_after
        self._server_key = server_key
        self._mesh_key = mesh_key
        self._watch = watch_conns
        self._ssl = ssl_context
        self._connect_timeout = connect_timeout
        self._app_name = app_name
        self._key = private_key
        self._preferred = preferred
        self._clock = clock
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._rng = rng or random.Random()
        self._client: DerpClient | None = None
        self._events: asyncio.Queue[ReconnectEvent] = asyncio.Queue(_EVENT_QUEUE)
        self._up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._restart_hint: float | None = None
        self.dropped = 0
        self.connects = 0
        self.last_error: str | None = None

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    @property
    def server_public_key(self) -> DerpPublicKey | None:
        return self._client.server_public_key if self._client else None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"derp-reconnect {self.url}")

    async def wait_connected(self, timeout: float | None = None) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._up.wait()
        except TimeoutError:
            return False
        return True

    async def _run(self) -> None:
        backoff = self._backoff_initial
        while not self._closed:
            client = DerpClient(self.url, self._key, server_key=self._server_key, mesh_key=self._mesh_key,
                                watch_conns=self._watch, ssl_context=self._ssl, preferred=self._preferred,
                                clock=self._clock, connect_timeout=self._connect_timeout, app_name=self._app_name,
                                cert_name=self._cert_name, dead_after=self._dead_after)
            started = self._clock()
            try:
                await client.connect()
            except (DerpError, OSError) as e:
                self.last_error = str(e)
                await client.close()
            else:
                self._client = client
                self.connects += 1
                self._up.set()
                assert client.server_public_key is not None
                await self._events.put(Connected(client.server_public_key))
                reason = await self._pump(client)
                self._up.clear()
                self._client = None
                await client.close()
                self.last_error = reason
                await self._events.put(Disconnected(reason))
                if self._clock() - started > 10 * self._backoff_initial:
                    backoff = self._backoff_initial  # it was up for a while: start over
            if self._closed:
                break
            if self._restart_hint is not None:
                # the server said it is restarting and when to come back: follow it (with a little jitter)
                delay, self._restart_hint = self._restart_hint, None
                await asyncio.sleep(min(self._backoff_max, delay) * self._rng.uniform(1.0, 1.5))
                backoff = self._backoff_initial
                continue
            await asyncio.sleep(self._rng.uniform(0.5, 1.0) * backoff)
            backoff = min(self._backoff_max, backoff * 2)

    async def _pump(self, client: DerpClient) -> str:
        while True:
            try:
                ev = await client.recv()
            except (DerpError, OSError) as e:
                return str(e)
            if isinstance(ev, Restarting):
                self._restart_hint = ev.reconnect_in_ms / 1000
            await self._events.put(ev)

    async def send(self, dst: NodePublicKey, packet: bytes) -> None:
        client = self._client
        if client is None or not client.connected:
            self.dropped += 1
            return
        try:
            await client.send(dst, packet)
        except DerpClosedError:
            self.dropped += 1

    async def recv(self) -> ReconnectEvent:
        return await self._events.get()

    async def ping(self, timeout: float = 5.0) -> float:
        client = self._client
        if client is None:
            raise DerpClosedError(f"DERP connection to {self.url} is down (reconnecting)")
        return await client.ping(timeout)

    async def note_preferred(self, preferred: bool) -> None:
        self._preferred = preferred
        client = self._client
        if client is not None and client.connected:
            with contextlib.suppress(DerpClosedError):
                await client.note_preferred(preferred)

    def send_nowait(self, dst: NodePublicKey | bytes, packet: bytes) -> bool:
        """SendPacket without waiting; False (counted in `dropped`) if disconnected or backed up."""
        client = self._client
        if client is not None and client.send_nowait(dst, packet):
            return True
        self.dropped += 1
        return False

    def forward_nowait(self, src: NodePublicKey | bytes, dst: NodePublicKey | bytes, packet: bytes) -> bool:
        """Mesh use: ForwardPacket without waiting; False (counted in `dropped`) if it could not be queued."""
        client = self._client
        if client is not None and client.forward_nowait(src, dst, packet):
            return True
        self.dropped += 1
        return False

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._client is not None:
            await self._client.close()
            self._client = None

