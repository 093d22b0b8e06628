"""Builds map frames (JSON bytes): full maps for a new stream, coalesced delta frames, keep-alives.

Each node's wire JSON (`wire.Node.to_json()`, serialized) is cached in the registry and
invalidated when the node changes, so a full map for N peers is N cache lookups and one byte join,
and a delta costs work proportional to the peers it carries. The DERP map and DNS config are
serialized once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from ..wire import DNSConfig, Node, PeerPatch, SSHConfig, format_time
from .config import ControlConfig
from .records import NodeRecord
from .registry import Change, MapSession, Registry

__all__ = ["Mapper", "ssh_config_provider"]


def _dt(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, UTC)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _compose(fields: Iterable[tuple[str, bytes]]) -> bytes:
    """A JSON object from (name, already-encoded JSON value) pairs."""
    return b"{" + b",".join(b'"' + k.encode() + b'":' + v for k, v in fields) + b"}"


def _array(items: Iterable[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"


def ssh_config_provider(_node: NodeRecord) -> SSHConfig | None:
    """Default: no mesh SSH config. The SSH-CA module may replace `Mapper.ssh_config`."""
    return None


class Mapper:
    def __init__(self, config: ControlConfig, registry: Registry) -> None:
        self.config = config
        self.registry = registry
        self.dns = DNSConfig(domain=config.domain, magic_dns=True, nameservers=config.nameservers)
        self._derp_json = _dumps(config.derp_map.to_json())
        self._dns_json = _dumps(self.dns.to_json())
        self.ssh_config = ssh_config_provider
        self._time_second = -1
        self._time_json = b'""'

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

    def node_json(self, rec: NodeRecord, now: float) -> bytes:
        cached = self.registry.wire_cache.get(rec.id)
        if cached is None:
            cached = _dumps(self.wire_node(rec, now).to_json())
            self.registry.wire_cache[rec.id] = cached
        return cached

    def patch_json(self, rec: NodeRecord) -> bytes:
        """The peersPatch entry of a node (cached like node_json: built once per change, not per stream)."""
        cached = self.registry.patch_cache.get(rec.id)
        if cached is None:
            cached = _dumps(PeerPatch(id=rec.id, endpoints=rec.endpoints, home_derp=rec.home_derp,
                                      online=self.registry.is_online(rec.id), last_seen=_dt(rec.last_seen)).to_json())
            self.registry.patch_cache[rec.id] = cached
        return cached

    def _head(self, session: MapSession, now: float) -> list[tuple[str, bytes]]:
        session.seq += 1
        second = int(now)
        if second != self._time_second:
            self._time_second = second
            self._time_json = b'"' + format_time(datetime.fromtimestamp(second, UTC)).encode() + b'"'
        return [("seq", str(session.seq).encode()), ("controlTime", self._time_json)]

    def full_frame(self, session: MapSession, now: float) -> bytes:
        reg = self.registry
        me = reg.nodes[session.node_id]
        session.pending.clear()
        session.self_changed = False
        session.urgent = False
        fields = self._head(session, now)
        fields.append(("node", self.node_json(me, now)))
        fields.append(("peers", _array(self.node_json(p, now) for p in reg.nodes.values()
                                       if reg.policy.can_see(me, p, now))))
        fields.append(("derpMap", self._derp_json))
        fields.append(("dns", self._dns_json))
        rules = reg.policy.packet_filter(me)
        if rules is not None:  # absent from a full map = no policy, allow all; [] would deny all
            fields.append(("packetFilter", _dumps([r.to_json() for r in rules])))
        ssh = self.ssh_config(me)
        if ssh is not None:
            fields.append(("ssh", _dumps(ssh.to_json())))
        return _compose(fields)

    def delta_frame(self, session: MapSession, now: float) -> bytes | None:
        """The pending changes of a session as one frame, or None when nothing is pending."""
        reg = self.registry
        me = reg.nodes.get(session.node_id)
        if me is None or (not session.pending and not session.self_changed):
            return None
        changed: list[bytes] = []
        removed: list[int] = []
        patches: list[bytes] = []
        for pid, kind in session.pending.items():
            peer = reg.nodes.get(pid)
            if peer is None or not reg.policy.can_see(me, peer, now):
                removed.append(pid)
            elif kind is Change.CHANGED:
                changed.append(self.node_json(peer, now))
            else:
                patches.append(self.patch_json(peer))
        session.pending.clear()
        session.urgent = False
        fields = self._head(session, now)
        if session.self_changed:
            session.self_changed = False
            fields.append(("node", self.node_json(me, now)))
        if changed:
            fields.append(("peersChanged", _array(changed)))
        if removed:
            fields.append(("peersRemoved", _dumps(removed)))
        if patches:
            fields.append(("peersPatch", _array(patches)))
        return _compose(fields)

    def keepalive_frame(self, session: MapSession, now: float) -> bytes:
        fields = self._head(session, now)
        fields.append(("keepAlive", b"true"))
        return _compose(fields)
