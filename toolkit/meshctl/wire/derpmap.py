"""The DERP map: Tailscale's DERPMap JSON (Go-cased field names) plus meshctl's `PlainHTTP` extension.

`PlainHTTP: true` on a node means its DERP endpoint is served over plain HTTP (no TLS) on
`DERPPort`; it is emitted only when true, so a map without plain-HTTP nodes is byte-compatible with
tailscale's. `STUNPort` 0 means 3478 and -1 disables STUN; `DERPPort` 0 means 443 (80 for PlainHTTP).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._json import WireFormatError, get_bool, get_int, get_str, require_mapping

__all__ = ["DERPMap", "DerpNode", "DerpRegion"]


@dataclass(frozen=True, slots=True)
class DerpNode:
    """One DERP server of a region (tailcfg.DERPNode)."""

    name: str
    region_id: int
    host_name: str
    ipv4: str = ""
    ipv6: str = ""
    stun_port: int = 0
    stun_only: bool = False
    derp_port: int = 0
    can_port80: bool = False
    cert_name: str = ""
    insecure_for_tests: bool = False
    stun_test_ip: str = ""
    plain_http: bool = False

    def effective_derp_port(self) -> int:
        if self.derp_port:
            return self.derp_port
        return 80 if self.plain_http else 443

    def effective_stun_port(self) -> int | None:
        if self.stun_port < 0:
            return None
        return self.stun_port or 3478

    def derp_url(self) -> str:
        """The URL a client dials for this node's DERP endpoint."""
        scheme = "http" if self.plain_http else "https"
        return f"{scheme}://{self.host_name}:{self.effective_derp_port()}/derp"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "Name": self.name, "RegionID": self.region_id, "HostName": self.host_name,
            "CertName": self.cert_name, "IPv4": self.ipv4, "IPv6": self.ipv6,
            "STUNPort": self.stun_port, "STUNOnly": self.stun_only, "DERPPort": self.derp_port,
            "CanPort80": self.can_port80, "InsecureForTests": self.insecure_for_tests,
            "STUNTestIP": self.stun_test_ip,
        }
        if self.plain_http:
            out["PlainHTTP"] = True
        return out

    @classmethod
    def from_json(cls, data: Any) -> DerpNode:
        w = "DERPNode"
        d = require_mapping(data, w)
        return cls(
            name=get_str(d, "Name", w), region_id=get_int(d, "RegionID", w), host_name=get_str(d, "HostName", w),
            ipv4=get_str(d, "IPv4", w, ""), ipv6=get_str(d, "IPv6", w, ""), stun_port=get_int(d, "STUNPort", w, 0),
            stun_only=get_bool(d, "STUNOnly", w, False), derp_port=get_int(d, "DERPPort", w, 0),
            can_port80=get_bool(d, "CanPort80", w, False), cert_name=get_str(d, "CertName", w, ""),
            insecure_for_tests=get_bool(d, "InsecureForTests", w, False),
            stun_test_ip=get_str(d, "STUNTestIP", w, ""), plain_http=get_bool(d, "PlainHTTP", w, False),
        )


@dataclass(frozen=True, slots=True)
class DerpRegion:
    """A DERP region (tailcfg.DERPRegion); nodes are in priority order. meshctl regions are 900-999."""

    region_id: int
    region_code: str
    region_name: str
    nodes: tuple[DerpNode, ...] = ()
    latitude: float | None = None
    longitude: float | None = None
    avoid: bool = False
    no_measure_no_home: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "RegionID": self.region_id, "RegionCode": self.region_code, "RegionName": self.region_name,
            "Avoid": self.avoid, "NoMeasureNoHome": self.no_measure_no_home,
            "Nodes": [n.to_json() for n in self.nodes],
        }
        if self.latitude is not None:
            out["Latitude"] = self.latitude
        if self.longitude is not None:
            out["Longitude"] = self.longitude
        return out

    @classmethod
    def from_json(cls, data: Any) -> DerpRegion:
        w = "DERPRegion"
        d = require_mapping(data, w)
        nodes = d.get("Nodes") or []
        if not isinstance(nodes, list):
            raise WireFormatError(f"{w}: field 'Nodes' want a list", field="Nodes")
        lat, lon = d.get("Latitude"), d.get("Longitude")
        for name, v in (("Latitude", lat), ("Longitude", lon)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                raise WireFormatError(f"{w}: field {name!r} want a number", field=name)
        return cls(
            region_id=get_int(d, "RegionID", w), region_code=get_str(d, "RegionCode", w, ""),
            region_name=get_str(d, "RegionName", w, ""), nodes=tuple(DerpNode.from_json(n) for n in nodes),
            latitude=None if lat is None else float(lat), longitude=None if lon is None else float(lon),
            avoid=get_bool(d, "Avoid", w, False), no_measure_no_home=get_bool(d, "NoMeasureNoHome", w, False),
        )


@dataclass(frozen=True, slots=True)
class DERPMap:
    """All DERP regions a node may use, keyed by region id (JSON object keys are decimal strings)."""

    regions: dict[int, DerpRegion] = field(default_factory=dict)
    omit_default_regions: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "Regions": {str(rid): r.to_json() for rid, r in sorted(self.regions.items())},
            "omitDefaultRegions": self.omit_default_regions,
        }

    @classmethod
    def from_json(cls, data: Any) -> DERPMap:
        w = "DERPMap"
        d = require_mapping(data, w)
        regions_raw = require_mapping(d.get("Regions") or {}, f"{w}.Regions")
        regions: dict[int, DerpRegion] = {}
        for key, value in regions_raw.items():
            if value is None:
                continue  # headscale's "1: null" removes a region
            region = DerpRegion.from_json(value)
            if str(region.region_id) != str(key):
                raise WireFormatError(f"{w}: region under key {key!r} has RegionID {region.region_id}")
            regions[region.region_id] = region
        return cls(regions=regions, omit_default_regions=get_bool(d, "omitDefaultRegions", w, False))
