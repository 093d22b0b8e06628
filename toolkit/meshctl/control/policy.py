"""Who may see whom: the one place the per-node peer set is decided.

Until a policy language lands, every authorized node with an unexpired key sees every other such
node, and the packet filter is empty (= allow all mesh traffic). Everything that builds a map or
routes a change asks this module, so a real policy changes only this file.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..wire import FilterRule
from .records import NodeRecord

__all__ = ["PeerPolicy"]


class PeerPolicy:
    def can_see(self, viewer: NodeRecord, peer: NodeRecord, now: float) -> bool:
        """Whether `peer` belongs in `viewer`'s netmap right now."""
        return viewer.id != peer.id and peer.authorized and not peer.is_expired(now)

    def audience(self, node_id: int, online: Iterable[int]) -> Iterable[int]:
        """Online nodes whose map may change when `node_id` changes (it may have been or become visible)."""
        return (nid for nid in online if nid != node_id)

    def packet_filter(self, viewer: NodeRecord) -> tuple[FilterRule, ...] | None:
        """`viewer`'s inbound rules; None = no policy yet (allow all mesh traffic), () = deny all."""
        return None
