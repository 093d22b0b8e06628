"""The agent's DERP connections: one reconnecting client per region in use, keyed by region id.

The home region's connection is kept open and marked preferred; other regions are dialled when a
peer that calls them home is sent to. Sends never block the caller: packets wait in a small queue per
region (oldest dropped when full, like a DERP server's per-client queue) and a writer task drains it.
Received packets go to one callback (`MagicSock.on_derp_packet`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from ..derp import ReconnectingDerpClient
from ..derp.frames import RecvPacket
from ..keys import NodePrivateKey, NodePublicKey
from ..wire import DERPMap

__all__ = ["DerpPool"]

log = logging.getLogger(__name__)

_QUEUE_DEPTH = 256


@dataclass
class _Region:
    client: ReconnectingDerpClient
    queue: asyncio.Queue[tuple[NodePublicKey, bytes]]
    tasks: list[asyncio.Task[None]]
    dropped: int = 0


class DerpPool:
    def __init__(self, private_key: NodePrivateKey, on_packet: Callable[[NodePublicKey, bytes], None]) -> None:
        self._key = private_key
        self._on_packet = on_packet
        self.derp_map: DERPMap | None = None
        self.home = 0
        self._regions: dict[int, _Region] = {}

    def url_of(self, region: int) -> str | None:
        if self.derp_map is None or region not in self.derp_map.regions:
            return None
        nodes = [n for n in self.derp_map.regions[region].nodes if not n.stun_only]
        return nodes[0].derp_url() if nodes else None

    async def set_home(self, region: int) -> None:
        if region == self.home:
            return
        old, self.home = self.home, region
        if old in self._regions:
            await self._regions[old].client.note_preferred(False)
        reg = self._ensure(region)
        if reg is not None:
            await reg.client.note_preferred(True)
        log.info("derp: home region %d", region)

    async def set_private_key(self, key: NodePrivateKey) -> None:
        """After a node key rotation: DERP addresses us by node key, so every connection is re-dialled."""
        self._key = key
        regions = list(self._regions)
        await self.close()
        for region in regions:
            self._ensure(region)

    def connected(self, region: int) -> bool:
        reg = self._regions.get(region)
        return reg is not None and reg.client.connected

    def send(self, region: int, dst: NodePublicKey, packet: bytes) -> None:
        reg = self._ensure(region or self.home) or self._ensure(self.home)
        if reg is None:
            return
        if reg.queue.full():
            reg.queue.get_nowait()
            reg.dropped += 1
        reg.queue.put_nowait((dst, packet))

    def _ensure(self, region: int) -> _Region | None:
        reg = self._regions.get(region)
        if reg is not None:
            return reg
        url = self.url_of(region)
        if url is None:
            return None
        client = ReconnectingDerpClient(url, self._key, preferred=(region == self.home))
        queue: asyncio.Queue[tuple[NodePublicKey, bytes]] = asyncio.Queue(_QUEUE_DEPTH)
        reg = _Region(client, queue, [])
        reg.tasks = [asyncio.create_task(self._writer(reg), name=f"derp-writer {region}"),
                     asyncio.create_task(self._reader(reg), name=f"derp-reader {region}")]
        self._regions[region] = reg
        log.info("derp: dialling region %d at %s", region, url)
        return reg

    async def _writer(self, reg: _Region) -> None:
        await reg.client.start()
        while True:
            dst, packet = await reg.queue.get()
            await reg.client.send(dst, packet)

    async def _reader(self, reg: _Region) -> None:
        while True:
            ev = await reg.client.recv()
            if isinstance(ev, RecvPacket):
                try:
                    self._on_packet(ev.src, ev.data)
                except Exception:  # a bad packet must not stop the relay
                    log.exception("derp: handling a packet from %s failed", ev.src.short())
            else:
                log.debug("derp: %s", type(ev).__name__)

    async def close(self) -> None:
        for reg in self._regions.values():
            for t in reg.tasks:
                t.cancel()
            for t in reg.tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            await reg.client.close()
        self._regions.clear()
