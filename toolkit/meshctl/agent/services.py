"""The seam between the daemon and the agent's services: MagicDNS, host DNS, packet filter, local API.

The daemon calls `start()` once the interface is up, `update(netmap)` after every netmap change and
`stop()` on the way out. A failing service is logged and retried on the next netmap; it never stops
the data plane (a mesh without MagicDNS still carries packets).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..control.client import NetMap
from ..errors import MeshctlError
from .config import AgentConfig

if TYPE_CHECKING:
    from .dns import MagicDNS
    from .filter import PacketFilter
    from .localapi import AgentBackend, LocalApiServer
    from .resolvconf import HostDns

__all__ = ["Services"]

log = logging.getLogger(__name__)


class Services:
    def __init__(self, cfg: AgentConfig, backend: AgentBackend) -> None:
        self.cfg = cfg
        self.backend = backend
        self.api: LocalApiServer | None = None
        self.dns: MagicDNS | None = None
        self.host_dns: HostDns | None = None
        self.filter: PacketFilter | None = None

    async def start(self) -> None:
        from .localapi import serve_local_api

        self.api = await serve_local_api(self.backend, self.cfg.socket)
        if self.cfg.packet_filter:
            from .filter import PacketFilter

            self.filter = PacketFilter(self.cfg.interface)

    async def update(self, netmap: NetMap) -> None:
        if self.filter is not None:
            # None: no policy, allow all; an empty tuple: deny all (docs/contracts.md)
            rules = None if netmap.packet_filter is None else [r.to_json() for r in netmap.packet_filter]
            try:
                await asyncio.to_thread(self.filter.apply, rules)
            except MeshctlError as err:
                log.warning("filter: %s", err)
        if self.cfg.magic_dns and netmap.dns is not None and netmap.dns.magic_dns and netmap.dns.domain:
            try:
                await self._update_dns(netmap)
            except (MeshctlError, OSError) as err:
                log.warning("dns: %s", err)

    async def _update_dns(self, netmap: NetMap) -> None:
        from .dns import MagicDNS
        from .resolvconf import HostDns

        assert netmap.dns is not None
        names: dict[str, list[str]] = {netmap.self_node.name: _plain(netmap.self_node.addresses)}
        for peer in netmap.peers.values():
            names[peer.name] = _plain(peer.addresses)
        if self.dns is None:
            self.host_dns = HostDns(netmap.dns.domain, self.cfg.interface,
                                    backup_path=self.cfg.state_dir / "resolv.conf.backup.json")
            upstreams = [(ip, 53) for ip in netmap.dns.nameservers] or self.host_dns.upstreams()
            self.dns = MagicDNS(netmap.dns.domain, upstreams)
            self.dns.update_names(names, netmap.dns.domain)
            await self.dns.start()
            await asyncio.to_thread(self.host_dns.apply)
        else:
            self.dns.update_names(names, netmap.dns.domain)

    async def stop(self) -> None:
        if self.api is not None:
            await self.api.close()
        if self.dns is not None:
            await self.dns.close()
        if self.host_dns is not None:
            try:
                await asyncio.to_thread(self.host_dns.restore)
            except MeshctlError as err:
                log.warning("dns: restoring the host's resolver failed: %s", err)
        if self.filter is not None:
            try:
                await asyncio.to_thread(self.filter.remove)
            except MeshctlError as err:
                log.warning("filter: %s", err)


def _plain(addresses: tuple[str, ...]) -> list[str]:
    return [a.split("/")[0] for a in addresses]
