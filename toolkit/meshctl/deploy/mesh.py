"""The mesh a deploy builds, worked out from the workspace (`mesh.toml`) and the inventory before connecting.

Pure: no pyinfra, no I/O. The roles render their configs from a `MeshPlan`; the runner adds what can only be
read from hosts (the control public key, minted auth keys and DERP tokens).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..workspace import Workspace
from .errors import DeployError
from .inventory import InventorySpec

__all__ = [
    "CONTROL_PORT",
    "DERP_PORT",
    "STUN_PORT",
    "DerpRegionPlan",
    "DerpServerPlan",
    "MeshPlan",
    "format_duration",
    "host_address",
    "plan_mesh",
]

CONTROL_PORT = 8080
DERP_PORT = 8443
STUN_PORT = 3478


def format_duration(seconds: int) -> str:
    """Seconds as the shortest exact duration text (`180d`, `8h`, `90s`)."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def host_address(name: str, data: Mapping[str, Any]) -> str:
    """The address other hosts reach a host at: `public_address`, else `ssh_hostname`, else its name."""
    return str(data.get("public_address") or data.get("ssh_hostname") or name)


@dataclass(frozen=True)
class DerpServerPlan:
    name: str
    region_id: int
    address: str
    derp_port: int
    stun_port: int
    plain_http: bool

    @property
    def url(self) -> str:
        scheme = "http" if self.plain_http else "https"
        return f"{scheme}://{self.address}:{self.derp_port}"


@dataclass(frozen=True)
class DerpRegionPlan:
    id: int
    code: str
    name: str
    servers: tuple[DerpServerPlan, ...]

    @property
    def meshed(self) -> bool:
        """Several servers in one region forward to each other with the region's mesh key."""
        return len(self.servers) > 1


@dataclass(frozen=True)
class MeshPlan:
    name: str
    domain: str
    ipv4_prefix: str
    ipv6_prefix: str
    node_key_expiry: str
    control_host: str
    control_url: str
    regions: tuple[DerpRegionPlan, ...]

    def derp_server(self, host: str) -> DerpServerPlan:
        for region in self.regions:
            for server in region.servers:
                if server.name == host:
                    return server
        raise DeployError(f"host {host!r} is not a DERP server of this mesh")

    def region(self, region_id: int) -> DerpRegionPlan:
        for region in self.regions:
            if region.id == region_id:
                return region
        raise DeployError(f"no DERP region {region_id} in this mesh")

    def mesh_peers(self, host: str) -> tuple[str, ...]:
        """URLs of the other DERP servers of `host`'s region (empty for a single-server region)."""
        me = self.derp_server(host)
        return tuple(s.url for s in self.region(me.region_id).servers if s.name != host)


def plan_mesh(workspace: Workspace, spec: InventorySpec, derp_defaults: Mapping[str, Any]) -> MeshPlan:
    """Combine workspace settings with the inventory; raises `DeployError` when they disagree."""
    control = spec.group("control")[0]
    control_data = spec.data(control)
    control_url = str(control_data.get("control_url") or workspace.control_url)
    if not control_url:
        raise DeployError("no control URL: set [control] url in mesh.toml or control_url on the control host")
    if not workspace.derp_regions and spec.group("derp"):
        raise DeployError(f"the inventory has DERP hosts but workspace {workspace.root} defines no [[derp.regions]]")
    known = {r.id: r for r in workspace.derp_regions}
    servers: dict[int, list[DerpServerPlan]] = {}
    for host in spec.group("derp"):
        data = {**derp_defaults, **spec.data(host)}
        region_id = int(data.get("derp_region") or workspace.derp_regions[0].id)
        if region_id not in known:
            raise DeployError(f"DERP host {host!r}: region {region_id} is not in the workspace "
                              f"(it has {', '.join(str(r) for r in sorted(known))})",
                              hint=f"add a [[derp.regions]] with id = {region_id} to mesh.toml")
        plain = not data.get("derp_tls_cert")
        servers.setdefault(region_id, []).append(DerpServerPlan(
            name=host, region_id=region_id, address=host_address(host, data),
            derp_port=int(data["derp_port"]), stun_port=int(data["stun_port"]), plain_http=plain))
    regions = tuple(DerpRegionPlan(id=r.id, code=r.code, name=r.name, servers=tuple(servers[r.id]))
                    for r in workspace.derp_regions if r.id in servers)
    return MeshPlan(
        name=workspace.name,
        domain=workspace.domain,
        ipv4_prefix=str(workspace.ipv4_prefix),
        ipv6_prefix=str(workspace.ipv6_prefix),
        node_key_expiry=format_duration(workspace.rotation.node_key_max_age),
        control_host=control,
        control_url=control_url.rstrip("/"),
        regions=regions,
    )
