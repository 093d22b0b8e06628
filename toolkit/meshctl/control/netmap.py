"""Sans-IO netmap state on the node: applies MapResponse frames (full, then deltas) to a NetMap.

The first frame of a stream must be full (`peers` present). Each later frame must carry
`seq` = previous + 1 (keep-alives included); anything else raises MapSequenceError and leaves the
state untouched, so the caller can reconnect and start again from a full map.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..wire import DERPMap, DNSConfig, FilterRule, MapResponse, Node, SSHConfig
from .errors import MapSequenceError

__all__ = ["NetMap", "NetMapState"]


@dataclass(frozen=True, slots=True)
class NetMap:
    """What a node knows about the mesh after the frames so far."""

    seq: int
    self_node: Node
    peers: dict[int, Node] = field(default_factory=dict)
    derp_map: DERPMap | None = None
    dns: DNSConfig | None = None
    packet_filter: tuple[FilterRule, ...] | None = None  # None: no policy, allow all; (): deny all
    ssh: SSHConfig | None = None

    def peer_by_name(self, name: str) -> Node | None:
        for p in self.peers.values():
            if p.name == name or p.fqdn == name:
                return p
        return None


class NetMapState:
    """Pure: `apply(frame) -> NetMap`. Call `reset()` when a new stream starts."""

    def __init__(self) -> None:
        self.netmap: NetMap | None = None

    def reset(self) -> None:
        self.netmap = None

    def apply(self, frame: MapResponse) -> NetMap:
        cur = self.netmap
        if cur is None:
            if not frame.is_full or frame.node is None:
                raise MapSequenceError(f"first map frame (seq {frame.seq}) is not a full netmap", got=frame.seq,
                                       want=None)
        elif frame.seq != cur.seq + 1:
            raise MapSequenceError(f"map frame seq {frame.seq} out of order, want {cur.seq + 1}", got=frame.seq,
                                   want=cur.seq + 1)
        if frame.is_full:
            assert frame.peers is not None and frame.node is not None
            new = NetMap(
                seq=frame.seq, self_node=frame.node, peers={p.id: p for p in frame.peers},
                derp_map=frame.derp_map, dns=frame.dns, packet_filter=frame.packet_filter, ssh=frame.ssh,
            )
        else:
            assert cur is not None
            peers = dict(cur.peers)
            for pid in frame.peers_removed:
                peers.pop(pid, None)
            for p in frame.peers_changed:
                peers[p.id] = p
            for patch in frame.peers_patch:
                old = peers.get(patch.id)
                if old is not None:
                    peers[patch.id] = patch.apply(old)
            new = NetMap(
                seq=frame.seq, self_node=frame.node or cur.self_node, peers=peers,
                derp_map=frame.derp_map or cur.derp_map, dns=frame.dns or cur.dns,
                packet_filter=cur.packet_filter if frame.packet_filter is None else frame.packet_filter,
                ssh=frame.ssh or cur.ssh,
            )
        self.netmap = new
        return new
