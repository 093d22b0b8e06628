"""The map protocol messages: MapRequest (node → control) and MapResponse frames (control → node).

A MapResponse is either full (first frame of a stream: `peers` set, plus `node`, `derpMap`,
`dns`, `packetFilter`, `ssh`), a delta (`peersChanged` / `peersRemoved` / `peersPatch`, maybe a new
`node`), or a keep-alive (`keepAlive: true`, nothing else). Every frame carries `seq`, increasing by
one per frame within a stream, and `controlTime`.

`packetFilter` (Tailscale's semantics): in a full map, absent/null = no policy, allow all mesh traffic, and
an empty list = deny all; in a delta, absent/null = unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..keys import DiscoPublicKey, NodePublicKey
from ._json import (
    WireFormatError,
    format_time,
    get_bool,
    get_int,
    get_key,
    get_obj,
    get_opt_key,
    get_opt_time,
    get_str,
    get_str_list,
    require_mapping,
)
from .derpmap import DERPMap
from .node import HostInfo, Node, PeerPatch

__all__ = ["DNSConfig", "FilterRule", "MapRequest", "MapResponse", "NetPortRange", "PortRange", "SSHConfig"]

PROTOCOL_VERSION = 1


def _list(d: Any, name: str, what: str) -> list[Any] | None:
    v = d.get(name)
    if v is None:
        return None
    if not isinstance(v, list):
        raise WireFormatError(f"{what}: field {name!r} want a list, got {type(v).__name__}", field=name)
    return v


@dataclass(frozen=True, slots=True)
class DNSConfig:
    """MagicDNS: names `<name>.<domain>` answered on 100.100.100.100; the rest goes to nameservers."""

    domain: str
    magic_dns: bool = True
    nameservers: tuple[str, ...] = ()
    search_domains: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"domain": self.domain, "magicDNS": self.magic_dns, "nameservers": list(self.nameservers),
                "searchDomains": list(self.search_domains)}

    @classmethod
    def from_json(cls, data: Any) -> DNSConfig:
        w = "DNSConfig"
        d = require_mapping(data, w)
        return cls(domain=get_str(d, "domain", w), magic_dns=get_bool(d, "magicDNS", w, True),
                   nameservers=get_str_list(d, "nameservers", w), search_domains=get_str_list(d, "searchDomains", w))


@dataclass(frozen=True, slots=True)
class PortRange:
    first: int = 0
    last: int = 65535

    def to_json(self) -> dict[str, Any]:
        return {"first": self.first, "last": self.last}

    @classmethod
    def from_json(cls, data: Any) -> PortRange:
        d = require_mapping(data, "PortRange")
        return cls(first=get_int(d, "first", "PortRange"), last=get_int(d, "last", "PortRange"))


@dataclass(frozen=True, slots=True)
class NetPortRange:
    """Destination: an IP or prefix (`*` = any) and a port range."""

    ip: str
    ports: PortRange = field(default_factory=PortRange)

    def to_json(self) -> dict[str, Any]:
        return {"ip": self.ip, "ports": self.ports.to_json()}

    @classmethod
    def from_json(cls, data: Any) -> NetPortRange:
        d = require_mapping(data, "NetPortRange")
        ports = d.get("ports")
        return cls(ip=get_str(d, "ip", "NetPortRange"),
                   ports=PortRange() if ports is None else PortRange.from_json(ports))


@dataclass(frozen=True, slots=True)
class FilterRule:
    """Allow packets from `srcIPs` to `dstPorts` (IP protocol numbers in `ipProto`; empty = TCP, UDP, ICMP)."""

    src_ips: tuple[str, ...]
    dst_ports: tuple[NetPortRange, ...]
    ip_proto: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"srcIPs": list(self.src_ips), "dstPorts": [p.to_json() for p in self.dst_ports],
                "ipProto": list(self.ip_proto)}

    @classmethod
    def from_json(cls, data: Any) -> FilterRule:
        w = "FilterRule"
        d = require_mapping(data, w)
        protos = _list(d, "ipProto", w) or []
        if not all(isinstance(p, int) and not isinstance(p, bool) for p in protos):
            raise WireFormatError(f"{w}: field 'ipProto' want a list of integers", field="ipProto")
        return cls(src_ips=get_str_list(d, "srcIPs", w),
                   dst_ports=tuple(NetPortRange.from_json(p) for p in _list(d, "dstPorts", w) or []),
                   ip_proto=tuple(protos))


@dataclass(frozen=True, slots=True)
class SSHConfig:
    """Mesh SSH: CA public keys (OpenSSH lines) and the principals this node accepts."""

    user_ca_keys: tuple[str, ...] = ()
    host_ca_keys: tuple[str, ...] = ()
    principals: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"userCAKeys": list(self.user_ca_keys), "hostCAKeys": list(self.host_ca_keys),
                "principals": list(self.principals)}

    @classmethod
    def from_json(cls, data: Any) -> SSHConfig:
        w = "SSHConfig"
        d = require_mapping(data, w)
        return cls(user_ca_keys=get_str_list(d, "userCAKeys", w), host_ca_keys=get_str_list(d, "hostCAKeys", w),
                   principals=get_str_list(d, "principals", w))


@dataclass(frozen=True, slots=True)
class MapRequest:
    """Sent sealed to POST /machine/map. `stream=False` only reports endpoints/homeDerp/hostinfo."""

    node_key: NodePublicKey
    disco_key: DiscoPublicKey | None = None
    endpoints: tuple[str, ...] = ()
    home_derp: int = 0
    hostinfo: HostInfo | None = None
    stream: bool = True
    version: int = PROTOCOL_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version, "nodeKey": self.node_key.to_text(),
            "discoKey": None if self.disco_key is None else self.disco_key.to_text(),
            "endpoints": list(self.endpoints), "homeDerp": self.home_derp,
            "hostinfo": None if self.hostinfo is None else self.hostinfo.to_json(), "stream": self.stream,
        }

    @classmethod
    def from_json(cls, data: Any) -> MapRequest:
        w = "MapRequest"
        d = require_mapping(data, w)
        return cls(
            version=get_int(d, "version", w, PROTOCOL_VERSION),
            node_key=get_key(d, "nodeKey", w, NodePublicKey.from_text),
            disco_key=get_opt_key(d, "discoKey", w, DiscoPublicKey.from_text),
            endpoints=get_str_list(d, "endpoints", w), home_derp=get_int(d, "homeDerp", w, 0),
            hostinfo=get_obj(d, "hostinfo", w, HostInfo.from_json), stream=get_bool(d, "stream", w, True),
        )


@dataclass(frozen=True, slots=True)
class MapResponse:
    """One frame of the map stream. None means "absent from this frame" (unchanged)."""

    seq: int
    control_time: datetime | None = None
    keep_alive: bool = False
    node: Node | None = None
    peers: tuple[Node, ...] | None = None
    peers_changed: tuple[Node, ...] = ()
    peers_removed: tuple[int, ...] = ()
    peers_patch: tuple[PeerPatch, ...] = ()
    derp_map: DERPMap | None = None
    dns: DNSConfig | None = None
    packet_filter: tuple[FilterRule, ...] | None = None
    ssh: SSHConfig | None = None

    @property
    def is_full(self) -> bool:
        return self.peers is not None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seq": self.seq}
        if self.control_time is not None:
            out["controlTime"] = format_time(self.control_time)
        if self.keep_alive:
            out["keepAlive"] = True
        if self.node is not None:
            out["node"] = self.node.to_json()
        if self.peers is not None:
            out["peers"] = [p.to_json() for p in self.peers]
        if self.peers_changed:
            out["peersChanged"] = [p.to_json() for p in self.peers_changed]
        if self.peers_removed:
            out["peersRemoved"] = list(self.peers_removed)
        if self.peers_patch:
            out["peersPatch"] = [p.to_json() for p in self.peers_patch]
        if self.derp_map is not None:
            out["derpMap"] = self.derp_map.to_json()
        if self.dns is not None:
            out["dns"] = self.dns.to_json()
        if self.packet_filter is not None:
            out["packetFilter"] = [r.to_json() for r in self.packet_filter]
        if self.ssh is not None:
            out["ssh"] = self.ssh.to_json()
        return out

    @classmethod
    def from_json(cls, data: Any) -> MapResponse:
        w = "MapResponse"
        d = require_mapping(data, w)
        peers = _list(d, "peers", w)
        removed = _list(d, "peersRemoved", w) or []
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in removed):
            raise WireFormatError(f"{w}: field 'peersRemoved' want a list of node ids", field="peersRemoved")
        pf = _list(d, "packetFilter", w)
        return cls(
            seq=get_int(d, "seq", w), control_time=get_opt_time(d, "controlTime", w),
            keep_alive=get_bool(d, "keepAlive", w, False), node=get_obj(d, "node", w, Node.from_json),
            peers=None if peers is None else tuple(Node.from_json(p) for p in peers),
            peers_changed=tuple(Node.from_json(p) for p in _list(d, "peersChanged", w) or []),
            peers_removed=tuple(removed),
            peers_patch=tuple(PeerPatch.from_json(p) for p in _list(d, "peersPatch", w) or []),
            derp_map=get_obj(d, "derpMap", w, DERPMap.from_json), dns=get_obj(d, "dns", w, DNSConfig.from_json),
            packet_filter=None if pf is None else tuple(FilterRule.from_json(r) for r in pf),
            ssh=get_obj(d, "ssh", w, SSHConfig.from_json),
        )
