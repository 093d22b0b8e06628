"""Builds map frames: full maps for a new stream, coalesced delta frames, keep-alives.

Frames are built as JSON-ready dicts from per-node dicts cached in the registry (`wire.Node.to_json()`
of each node, invalidated when the node changes), so a full map for N peers costs N dict lookups and
one `json.dumps`, and a delta costs work proportional to the peers it carries.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..wire import DNSConfig, Node, PeerPatch, SSHConfig, format_time
from .config import ControlConfig
from .records import NodeRecord
from .registry import Change, MapSession, Registry

__all__ = ["Mapper", "ssh_config_provider"]

_EPOCH = datetime.fromtimestamp(0, UTC)


def _dt(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, UTC)


def ssh_config_provider(_node: NodeRecord) -> SSHConfig | None:
    """Default: no mesh SSH config. The SSH-CA module may replace `Mapper.ssh_config`."""
    return None


class Mapper:
    def __init__(self, config: ControlConfig, registry: Registry) -> None:
        self.config = config
        self.registry = registry
        self.dns = DNSConfig(domain=config.domain, magic_dns=True, nameservers=config.nameservers)
        self._derp_json = config.derp_map.to_json()
        self._dns_json = self.dns.to_json()
        self.ssh_config = ssh_config_provider

    def wire_node(self, rec: NodeRecord, now: float) -> Node:
        reg = self.registry
        prefixes = (f"{rec.ipv4}/32", f"{rec.ipv6}/128")
        return Node(
            id=rec.id, name=rec.name, fqdn=f"{rec.name}.{self.config.domain}",
            user=reg.user_names.get(rec.user_id, "") if rec.user_id is not None else "",
            node_key=rec.node_key, machine_key=rec.machine_key, addresses=prefixes, allowed_ips=prefixes,
            tags=rec.tags, key_expiry=None if rec.expiry_disabled else _dt(rec.key_expiry), disco_key=rec.disco_key,
            endpoints=rec.endpoints, home_derp=rec.home_derp, online=reg.is_online(rec.id),
            last_seen=_dt(rec.last_seen), expired=rec.is_expired(now), machine_authorized=rec.authorized,
            hostinfo=rec.hostinfo,
        )

    def node_json(self, rec: NodeRecord, now: float) -> dict[str, Any]:
        cached = self.registry.wire_cache.get(rec.id)
        if cached is None:
            cached = self.wire_node(rec, now).to_json()
            self.registry.wire_cache[rec.id] = cached
        return cached

    def _head(self, session: MapSession, now: float) -> dict[str, Any]:
        session.seq += 1
        return {"seq": session.seq, "controlTime": format_time(datetime.fromtimestamp(now, UTC))}

    def full_frame(self, session: MapSession, now: float) -> dict[str, Any]:
        reg = self.registry
        me = reg.nodes[session.node_id]
        session.pending.clear()
        session.self_changed = False
        frame = self._head(session, now)
        frame["node"] = self.node_json(me, now)
        frame["peers"] = [self.node_json(p, now) for p in reg.nodes.values() if reg.policy.can_see(me, p, now)]
        frame["derpMap"] = self._derp_json
        frame["dns"] = self._dns_json
        frame["packetFilter"] = [r.to_json() for r in reg.policy.packet_filter(me)]
        ssh = self.ssh_config(me)
        if ssh is not None:
            frame["ssh"] = ssh.to_json()
        return frame

    def delta_frame(self, session: MapSession, now: float) -> dict[str, Any] | None:
        """The pending changes of a session as one frame, or None when nothing is pending."""
        reg = self.registry
        me = reg.nodes.get(session.node_id)
        if me is None or (not session.pending and not session.self_changed):
            return None
        changed, removed, patches = [], [], []
        for pid, kind in session.pending.items():
            peer = reg.nodes.get(pid)
            if peer is None or not reg.policy.can_see(me, peer, now):
                removed.append(pid)
            elif kind is Change.CHANGED:
                changed.append(self.node_json(peer, now))
            else:
                patches.append(PeerPatch(id=pid, endpoints=peer.endpoints, home_derp=peer.home_derp,
                                         online=reg.is_online(pid), last_seen=_dt(peer.last_seen)).to_json())
        session.pending.clear()
        frame = self._head(session, now)
        if session.self_changed:
            session.self_changed = False
            frame["node"] = self.node_json(me, now)
        if changed:
            frame["peersChanged"] = changed
        if removed:
            frame["peersRemoved"] = removed
        if patches:
            frame["peersPatch"] = patches
        return frame

    def keepalive_frame(self, session: MapSession, now: float) -> dict[str, Any]:
        frame = self._head(session, now)
        frame["keepAlive"] = True
        return frame
