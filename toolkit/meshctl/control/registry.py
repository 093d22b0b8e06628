"""In-memory node set, open map sessions, and the change bus that feeds them.

The registry mirrors the `nodes` table (loaded at start, updated after each successful store
write) with indexes by machine key, node key, name and address. A change to one node is pushed to
the sessions of the nodes that may see it (`PeerPolicy.audience`) as a pending entry — cost
O(sessions touched); nothing rebuilds another node's whole map. Each session coalesces its pending
entries and turns them into one delta frame when its stream task wakes (see `mapper`).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Iterator

from ..keys import Box, MachinePublicKey, NodePublicKey
from .policy import PeerPolicy
from .records import NodeRecord

__all__ = ["Change", "MapSession", "Registry"]


class Change(enum.IntEnum):
    PRESENCE = 1  # only online / last seen changed (batched longer: a reconnect storm is mostly these)
    PATCH = 2  # endpoints / home DERP changed (and maybe presence)
    CHANGED = 3  # anything else (keys, name, tags, expiry, authorization, removal)


class MapSession:
    """One open map stream: its seq counter and the peer changes not yet sent."""

    def __init__(self, node_id: int, box: Box) -> None:
        self.node_id = node_id
        self.box = box
        self.seq = 0
        self.pending: dict[int, Change] = {}
        self.self_changed = False
        self.urgent = False  # something beyond presence is pending
        self.closing = False
        self.wake = asyncio.Event()

    def push(self, peer_id: int, kind: Change) -> None:
        if self.pending.get(peer_id, 0) < kind:
            self.pending[peer_id] = kind
        if kind > Change.PRESENCE:
            self.urgent = True
        self.wake.set()

    def push_self(self) -> None:
        self.self_changed = True
        self.urgent = True
        self.wake.set()

    def close(self) -> None:
        self.closing = True
        self.wake.set()


class Registry:
    def __init__(self, policy: PeerPolicy) -> None:
        self.policy = policy
        self.nodes: dict[int, NodeRecord] = {}
        self.user_names: dict[int, str] = {}
        self.sessions: dict[int, list[MapSession]] = {}
        self._by_machine: dict[bytes, int] = {}
        self._by_node_key: dict[bytes, int] = {}
        self._by_name: dict[str, int] = {}
        self.used4: set[str] = set()
        self.used6: set[str] = set()
        self.wire_cache: dict[int, bytes] = {}
        self.patch_cache: dict[int, bytes] = {}
        self.expired_announced: set[int] = set()

    # --- node set --------------------------------------------------------------------------------
    def put(self, rec: NodeRecord) -> NodeRecord | None:
        """Insert or replace a node; returns the previous record."""
        old = self.nodes.get(rec.id)
        if old is not None:
            self._unindex(old)
        self.nodes[rec.id] = rec
        self._by_machine[rec.machine_key.raw] = rec.id
        self._by_node_key[rec.node_key.raw] = rec.id
        self._by_name[rec.name] = rec.id
        self.used4.add(rec.ipv4)
        self.used6.add(rec.ipv6)
        self._invalidate(rec.id)
        return old

    def remove(self, node_id: int) -> NodeRecord | None:
        rec = self.nodes.pop(node_id, None)
        if rec is not None:
            self._unindex(rec)
        self._invalidate(node_id)
        self.expired_announced.discard(node_id)
        return rec

    def _invalidate(self, node_id: int) -> None:
        self.wire_cache.pop(node_id, None)
        self.patch_cache.pop(node_id, None)

    def _unindex(self, rec: NodeRecord) -> None:
        self._by_machine.pop(rec.machine_key.raw, None)
        self._by_node_key.pop(rec.node_key.raw, None)
        self._by_name.pop(rec.name, None)
        self.used4.discard(rec.ipv4)
        self.used6.discard(rec.ipv6)

    def by_machine(self, key: MachinePublicKey) -> NodeRecord | None:
        nid = self._by_machine.get(key.raw)
        return None if nid is None else self.nodes[nid]

    def by_node_key(self, key: NodePublicKey) -> NodeRecord | None:
        nid = self._by_node_key.get(key.raw)
        return None if nid is None else self.nodes[nid]

    def name_taken(self, name: str, except_id: int | None = None) -> bool:
        nid = self._by_name.get(name)
        return nid is not None and nid != except_id

    def unique_name(self, base: str, except_id: int | None = None) -> str:
        """`base`, or `base-1`, `base-2`, … whichever is free (MagicDNS names are unique)."""
        name, n = base, 0
        while self.name_taken(name, except_id):
            n += 1
            suffix = f"-{n}"
            name = base[: 63 - len(suffix)] + suffix
        return name

    # --- sessions and the change bus -------------------------------------------------------------
    def is_online(self, node_id: int) -> bool:
        return bool(self.sessions.get(node_id))

    def online_ids(self) -> Iterator[int]:
        return iter(self.sessions)

    def stream_count(self) -> int:
        return sum(len(v) for v in self.sessions.values())

    def open_session(self, session: MapSession) -> bool:
        """Register a stream; returns True when the node just came online. Older streams of the node close."""
        existing = self.sessions.setdefault(session.node_id, [])
        for old in existing:
            old.close()
        existing.append(session)
        if len(existing) == 1:
            self._invalidate(session.node_id)
            return True
        return False

    def close_session(self, session: MapSession) -> bool:
        """Forget a stream; returns True when the node just went offline."""
        lst = self.sessions.get(session.node_id)
        if lst is None or session not in lst:
            return False
        lst.remove(session)
        if lst:
            return False
        del self.sessions[session.node_id]
        self._invalidate(session.node_id)
        return True

    def notify(self, node_id: int, kind: Change, *, include_self: bool = True) -> int:
        """Queue a change of `node_id` for every stream that may see it; returns how many were touched."""
        self._invalidate(node_id)
        touched = 0
        for nid in self.policy.audience(node_id, self.online_ids()):
            for s in self.sessions[nid]:
                s.push(node_id, kind)
                touched += 1
        if include_self:
            for s in self.sessions.get(node_id, ()):
                s.push_self()
                touched += 1
        return touched

    def close_streams(self, node_id: int) -> None:
        for s in self.sessions.get(node_id, ()):
            s.close()
