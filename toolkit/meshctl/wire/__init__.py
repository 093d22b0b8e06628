"""Wire types shared by control, agent and DERP: nodes, map request/response frames, DERP map, DNS, filter.

Every type is a frozen dataclass with `to_json() -> dict` and `from_json(obj) -> Self`; camelCase
JSON names as in DESIGN §3, except the DERP map, which keeps tailscale's Go-cased names (plus the
meshctl extension `PlainHTTP`). Only public keys appear here — a unit test walks every type and
fails if a field could hold private key material. Malformed JSON raises WireFormatError.
"""

from __future__ import annotations

from ._json import WireFormatError, format_time, parse_time
from .derpmap import DERPMap, DerpNode, DerpRegion
from .mapmsg import (
    PROTOCOL_VERSION,
    DNSConfig,
    FilterRule,
    MapRequest,
    MapResponse,
    NetPortRange,
    PortRange,
    SSHConfig,
)
from .node import HostInfo, Node, PeerPatch

__all__ = [
    "PROTOCOL_VERSION",
    "DERPMap",
    "DNSConfig",
    "DerpNode",
    "DerpRegion",
    "FilterRule",
    "HostInfo",
    "MapRequest",
    "MapResponse",
    "NetPortRange",
    "Node",
    "PeerPatch",
    "PortRange",
    "SSHConfig",
    "WireFormatError",
    "format_time",
    "parse_time",
]
