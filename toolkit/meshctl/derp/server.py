"""The DERP relay server: an asyncio shell around the pure codec (`frames`, `handshake`, `http`, `limits`).

One `DerpServer` holds the registry of connected clients (node key → connection), mesh watchers and
mesh forwarders; one `conn.Conn` protocol object per TCP (or TLS) connection drives that connection from
the HTTP request through the handshake to relaying. Bounded everywhere:

- the HTTP head is capped (8 KiB) and, with the ClientInfo, must arrive within `handshake_timeout`;
- at most `max_pending` connections may be un-handshaken at once; more are closed on accept;
- frames above the reader limit are refused from their header, before the body is buffered;
- each client's outgoing packets go straight to its transport while it keeps up; when the transport
  pauses, into `SendQueue` (32 data + 32 disco, head drop); a transport paused longer than
  `write_timeout` (2 s, mesh peers 30 s) is closed, so a stalled reader cannot grow memory.

Output to each destination is batched per input chunk: frames are collected in `_out` and written with
one `transport.write` after the chunk is processed (see `DerpServer.flush`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Callable, Sequence

from ..keys import DerpPrivateKey, DerpPublicKey, NodePublicKey
from .admission import AdmissionVerifier
from .conn import STATE_ACTIVE, Conn
from .frames import Health, PeerGone, PeerGoneReason, Restarting, encode_frame
from .handshake import ClientInfo, ServerInfo, encode_server_key, open_client_info, seal_server_info
from .limits import QUEUE_DEPTH
from .metrics import RelayStats, render_metrics

__all__ = ["DerpServer", "Forwarder"]

log = logging.getLogger("meshctl.derp")


class Forwarder:
    """Something that can carry a packet to another server of the region (a mesh link)."""

    def forward_nowait(self, src: bytes, dst: bytes, packet: bytes) -> bool:  # pragma: no cover - interface
        raise NotImplementedError


class DerpServer:
    def __init__(self, private_key: DerpPrivateKey, *, mesh_key: str | Sequence[str] | None = None,
                 verifier: AdmissionVerifier | None = None, handshake_timeout: float = 10.0,
                 write_timeout: float = 2.0, mesh_write_timeout: float = 30.0, keepalive_interval: float = 60.0,
                 keepalive_jitter: float = 5.0,
                 max_pending: int = 1024, queue_depth: int = QUEUE_DEPTH, stats: RelayStats | None = None,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None) -> None:
        self._key = private_key
        self.public_key: DerpPublicKey = private_key.public_key()
        self.pub_hex = self.public_key.raw.hex()
        self.server_key_frame = encode_server_key(self.public_key)
        # accepted mesh keys (several during a rotation's overlap window)
        self.mesh_keys: tuple[str, ...] = (mesh_key,) if isinstance(mesh_key, str) else tuple(mesh_key or ())
        self.verifier = verifier
        self.handshake_timeout = handshake_timeout
        self.write_timeout = write_timeout
        self.mesh_write_timeout = mesh_write_timeout
        self.keepalive_interval = keepalive_interval
        self.keepalive_jitter = keepalive_jitter
        self.max_pending = max_pending
        self.queue_depth = queue_depth
        self.stats = stats or RelayStats()
        self.clock = clock
        self.rng = rng or random.Random()
        self.clients: dict[bytes, Conn] = {}
        self.watchers: set[Conn] = set()
        self.forwarders: dict[bytes, Forwarder] = {}
        self.conns: set[Conn] = set()
        self.pending = 0  # connections accepted but not yet through the handshake
        self.dirty: list[Conn] = []
        self._servers: list[asyncio.Server] = []
        self.metrics_hooks: list[Callable[[], None]] = []  # called before rendering /metrics

    # -- listening ----------------------------------------------------------------------------------

    async def listen(self, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None) -> tuple[str, int]:
        """Start accepting on host:port (0 picks a port); returns the bound address."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: Conn(self), host, port, ssl=ssl_context,
                                          ssl_handshake_timeout=self.handshake_timeout if ssl_context else None,
                                          backlog=1024)
        self._servers.append(server)
        sockname = server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    async def close(self, *, reconnect_in: float = 0.5, try_for: float = 30.0) -> None:
        """Stop accepting, tell admitted clients (Restarting) when to come back, and close every connection."""
        for server in self._servers:
            server.close()
        restarting = encode_frame(Restarting(int(reconnect_in * 1000), int(try_for * 1000)))
        for conn in list(self.conns):
            if conn.state == STATE_ACTIVE:
                conn.write_control(restarting)
            conn.close("server shutting down")
        for server in self._servers:
            await server.wait_closed()
        if self.verifier is not None:
            await self.verifier.aclose()

    # -- registry -----------------------------------------------------------------------------------

    def open_client_info(self, payload: bytes) -> tuple[NodePublicKey, ClientInfo]:
        """Open a ClientInfo with this relay's key (the private key stays inside the server object)."""
        return open_client_info(self._key, payload)

    def server_info_frame(self, client: NodePublicKey) -> bytes:
        return seal_server_info(self._key, client, ServerInfo())

    def register(self, conn: Conn) -> None:
        assert conn.key is not None
        old = self.clients.get(conn.key)
        self.clients[conn.key] = conn
        self.stats.clients_current = len(self.clients)
        if old is not None and old is not conn:
            # last connection wins; tell the older one why it is being dropped
            self.stats.drops["dup_client"] += 1
            old.write_control(encode_frame(Health("another connection with the same node key replaced this one")))
            old.close("replaced by a newer connection with the same key", unregister=False)
        if conn.is_mesh:
            self.stats.clients_mesh += 1
        present = conn.peer_present_frame()
        for w in self.watchers:
            if w is not conn:
                w.write_control(present)

    def unregister(self, conn: Conn) -> None:
        self.watchers.discard(conn)
        if conn.is_mesh:
            self.stats.clients_mesh -= 1
        if conn.preferred:
            self.stats.clients_preferred -= 1
        if conn.key is None or self.clients.get(conn.key) is not conn:
            return
        del self.clients[conn.key]
        self.stats.clients_current = len(self.clients)
        gone = encode_frame(PeerGone(NodePublicKey(conn.key), PeerGoneReason.DISCONNECTED))
        for w in self.watchers:
            w.write_control(gone)
        for other in self.clients.values():
            if conn.key in other.sent_to and other not in self.watchers:
                other.sent_to.discard(conn.key)
                other.write_control(gone)

    def add_watcher(self, conn: Conn) -> None:
        self.watchers.add(conn)
        for other in self.clients.values():
            if other is not conn:
                conn.write_control(other.peer_present_frame())

    def set_forwarder(self, key: bytes, fwd: Forwarder) -> None:
        self.forwarders[key] = fwd

    def remove_forwarder(self, key: bytes, fwd: Forwarder) -> None:
        if self.forwarders.get(key) is fwd:
            del self.forwarders[key]

    def mark_dirty(self, conn: Conn) -> None:
        self.dirty.append(conn)

    def flush(self) -> None:
        dirty, self.dirty = self.dirty, []
        for conn in dirty:
            conn.flush()

    def render_metrics(self) -> bytes:
        self.stats.pending_current = self.pending
        for hook in self.metrics_hooks:
            hook()
        return render_metrics(self.stats)
