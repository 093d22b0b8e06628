"""Regional mesh: this relay dials every other relay of its region and forwards packets one hop.

For each `--mesh-with` URL a `MeshLink` keeps a `ReconnectingDerpClient` (our DERP key as client key,
the mesh key, WatchConns). The peer streams PeerPresent/PeerGone for its clients; the link records
them in the server's forwarder table, and the server sends packets for those keys through the link as
ForwardPacket. A link that drops forgets its keys and is re-dialled with backoff. A URL that turns out
to be this relay itself (same key) is dropped, so one list can be used on every node of a region.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

from ..keys import DerpPrivateKey
from .client import Connected, Disconnected, ReconnectingDerpClient
from .frames import PeerGone, PeerPresent, PeerPresentFlags
from .server import DerpServer, Forwarder

__all__ = ["MeshLink"]

log = logging.getLogger("meshctl.derp")


class MeshLink(Forwarder):
    def __init__(self, server: DerpServer, url: str, private_key: DerpPrivateKey, mesh_key: str, *,
                 ssl_context: ssl.SSLContext | None = None, backoff_initial: float = 0.5,
                 backoff_max: float = 30.0) -> None:
        self.server = server
        self.url = url
        self.keys: set[bytes] = set()
        self.is_self = False
        self._client = ReconnectingDerpClient(url, private_key, mesh_key=mesh_key, watch_conns=True,
                                              ssl_context=ssl_context, app_name="meshctl-derp-mesh",
                                              backoff_initial=backoff_initial, backoff_max=backoff_max)
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._client.connected

    async def start(self) -> None:
        await self._client.start()
        self._task = asyncio.create_task(self._run(), name=f"derp-mesh {self.url}")

    def forward_nowait(self, src: bytes, dst: bytes, packet: bytes) -> bool:
        return self._client.forward_nowait(src, dst, packet)

    def _forget(self) -> None:
        for key in self.keys:
            self.server.remove_forwarder(key, self)
        self.keys.clear()

    async def _run(self) -> None:
        while True:
            ev = await self._client.recv()
            if isinstance(ev, Connected):
                if ev.server_key == self.server.public_key:
                    log.info("mesh URL %s is this relay itself; not meshing with it", self.url)
                    self.is_self = True
                    await self._client.close()
                    return
                self._forget()  # the peer now sends a fresh PeerPresent for each of its clients
                log.info("mesh link to %s (%s) up", self.url, ev.server_key.short())
            elif isinstance(ev, Disconnected):
                self._forget()
                log.info("mesh link to %s down: %s; re-dialling", self.url, ev.reason)
            elif isinstance(ev, PeerPresent):
                if ev.flags & PeerPresentFlags.MESH_PEER:
                    continue  # other relays' mesh connections carry no clients
                raw = ev.key.raw
                self.server.set_forwarder(raw, self)  # a local client still wins: the server looks there first
                self.keys.add(raw)
            elif isinstance(ev, PeerGone):
                raw = ev.key.raw
                self.keys.discard(raw)
                self.server.remove_forwarder(raw, self)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._client.close()
        self._forget()
