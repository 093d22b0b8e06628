"""Node records as the control server sends them: HostInfo, Node (self and peers) and PeerPatch.

JSON names are camelCase (DESIGN §3). Keys travel in their prefixed text forms (`nodekey:`,
`mkey:`, `discokey:`); only public keys exist here. Times are RFC 3339 UTC strings or null.
`addresses` and `allowedIPs` are prefixes: the node's IPv4 as `/32` and its IPv6 as `/128`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..keys import DiscoPublicKey, MachinePublicKey, NodePublicKey
from ._json import (
    format_time,
    get_bool,
    get_int,
    get_key,
    get_opt_key,
    get_opt_time,
    get_str,
    get_str_list,
    require_mapping,
)

__all__ = ["HostInfo", "Node", "PeerPatch"]


@dataclass(frozen=True, slots=True)
class HostInfo:
    """What a node says about its host. `sshHostKeys` are OpenSSH public key lines (for host certs)."""

    hostname: str = ""
    os: str = ""
    os_version: str = ""
    agent_version: str = ""
    ssh_host_keys: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "hostname": self.hostname, "os": self.os, "osVersion": self.os_version,
            "agentVersion": self.agent_version, "sshHostKeys": list(self.ssh_host_keys),
        }

    @classmethod
    def from_json(cls, data: Any) -> HostInfo:
        w = "HostInfo"
        d = require_mapping(data, w)
        return cls(
            hostname=get_str(d, "hostname", w, ""), os=get_str(d, "os", w, ""),
            os_version=get_str(d, "osVersion", w, ""), agent_version=get_str(d, "agentVersion", w, ""),
            ssh_host_keys=get_str_list(d, "sshHostKeys", w),
        )


@dataclass(frozen=True, slots=True)
class Node:
    """A mesh node as seen in a netmap (the self node or a peer)."""

    id: int
    name: str
    fqdn: str
    user: str
    node_key: NodePublicKey
    machine_key: MachinePublicKey
    addresses: tuple[str, ...]
    allowed_ips: tuple[str, ...]
    tags: tuple[str, ...] = ()
    key_expiry: datetime | None = None
    disco_key: DiscoPublicKey | None = None
    endpoints: tuple[str, ...] = ()
    home_derp: int = 0
    online: bool = False
    last_seen: datetime | None = None
    expired: bool = False
    machine_authorized: bool = True
    hostinfo: HostInfo | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "fqdn": self.fqdn, "user": self.user, "tags": list(self.tags),
            "nodeKey": self.node_key.to_text(),
            "keyExpiry": None if self.key_expiry is None else format_time(self.key_expiry),
            "machineKey": self.machine_key.to_text(),
            "discoKey": None if self.disco_key is None else self.disco_key.to_text(),
            "addresses": list(self.addresses), "allowedIPs": list(self.allowed_ips),
            "endpoints": list(self.endpoints), "homeDerp": self.home_derp, "online": self.online,
            "lastSeen": None if self.last_seen is None else format_time(self.last_seen),
            "expired": self.expired, "machineAuthorized": self.machine_authorized,
            "hostinfo": None if self.hostinfo is None else self.hostinfo.to_json(),
        }

    @classmethod
    def from_json(cls, data: Any) -> Node:
        w = "Node"
        d = require_mapping(data, w)
        hi = d.get("hostinfo")
        return cls(
            id=get_int(d, "id", w), name=get_str(d, "name", w), fqdn=get_str(d, "fqdn", w, ""),
            user=get_str(d, "user", w, ""), tags=get_str_list(d, "tags", w),
            node_key=get_key(d, "nodeKey", w, NodePublicKey.from_text),
            key_expiry=get_opt_time(d, "keyExpiry", w),
            machine_key=get_key(d, "machineKey", w, MachinePublicKey.from_text),
            disco_key=get_opt_key(d, "discoKey", w, DiscoPublicKey.from_text),
            addresses=get_str_list(d, "addresses", w), allowed_ips=get_str_list(d, "allowedIPs", w),
            endpoints=get_str_list(d, "endpoints", w), home_derp=get_int(d, "homeDerp", w, 0),
            online=get_bool(d, "online", w, False), last_seen=get_opt_time(d, "lastSeen", w),
            expired=get_bool(d, "expired", w, False), machine_authorized=get_bool(d, "machineAuthorized", w, True),
            hostinfo=None if hi is None else HostInfo.from_json(hi),
        )


@dataclass(frozen=True, slots=True)
class PeerPatch:
    """A small change to one peer (`peersPatch`): only the fields that are not None changed."""

    id: int
    endpoints: tuple[str, ...] | None = None
    home_derp: int | None = None
    online: bool | None = None
    last_seen: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id}
        if self.endpoints is not None:
            out["endpoints"] = list(self.endpoints)
        if self.home_derp is not None:
            out["homeDerp"] = self.home_derp
        if self.online is not None:
            out["online"] = self.online
        if self.last_seen is not None:
            out["lastSeen"] = format_time(self.last_seen)
        return out

    @classmethod
    def from_json(cls, data: Any) -> PeerPatch:
        w = "PeerPatch"
        d = require_mapping(data, w)
        return cls(
            id=get_int(d, "id", w),
            endpoints=get_str_list(d, "endpoints", w) if "endpoints" in d else None,
            home_derp=get_int(d, "homeDerp", w) if "homeDerp" in d else None,
            online=get_bool(d, "online", w) if "online" in d else None,
            last_seen=get_opt_time(d, "lastSeen", w),
        )

    def apply(self, node: Node) -> Node:
        """The peer with this patch applied (pure)."""
        from dataclasses import replace

        return replace(
            node,
            endpoints=node.endpoints if self.endpoints is None else self.endpoints,
            home_derp=node.home_derp if self.home_derp is None else self.home_derp,
            online=node.online if self.online is None else self.online,
            last_seen=node.last_seen if self.last_seen is None else self.last_seen,
        )
