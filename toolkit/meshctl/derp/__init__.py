"""DERP relay for meshctl: Tailscale DERP v2 wire protocol, asyncio server, client library, regional mesh.

Layers, pure first: `frames` (frame codec and reader), `handshake` (NaCl-box ClientInfo/ServerInfo, mesh
keys), `http` (request/response heads), `accept` and `dial` (the server and client handshake state machines),
`limits` (send queue, token bucket), `config` (TOML + flags). Shells: `client` (asyncio client library, the
agent's interface), `conn` (one server connection), `server` (registry, forwarding, listeners), `admission`
(control-server verification), `mesh` (regional mesh links), `metrics`, `service` (the `derp serve` process).

Public API:
    DerpClient, ReconnectingDerpClient, Connected, Disconnected, DerpEvent, parse_derp_url   (client)
    RecvPacket, PeerGone, PeerGoneReason, PeerPresent, PeerPresentFlags, Pong, Health, KeepAlive, Restarting
                                                                       (events = frame dataclasses)
    FrameType, FrameReader, encode_frame, parse_frame, MAGIC, PROTOCOL_VERSION, MAX_PACKET_SIZE  (codec)
    ClientInfo, ServerInfo                                               (handshake)
    DerpError and subclasses                                             (errors)
"""

from __future__ import annotations

from .client import Connected, DerpClient, DerpEvent, Disconnected, ReconnectingDerpClient, parse_derp_url
from .errors import (
    AdmissionDeniedError,
    BadMagicError,
    DerpClosedError,
    DerpConnectError,
    DerpError,
    DerpProtocolError,
    FrameFormatError,
    FrameTooLargeError,
    FrameTruncatedError,
    HandshakeError,
    HttpUpgradeError,
    PingTimeoutError,
    ServerKeyMismatchError,
)
from .frames import (
    MAGIC,
    MAX_PACKET_SIZE,
    PROTOCOL_VERSION,
    FrameReader,
    FrameType,
    Health,
    KeepAlive,
    PeerGone,
    PeerGoneReason,
    PeerPresent,
    PeerPresentFlags,
    Pong,
    RecvPacket,
    Restarting,
    encode_frame,
    parse_frame,
)
from .handshake import ClientInfo, ServerInfo

__all__ = [
    "MAGIC",
    "MAX_PACKET_SIZE",
    "PROTOCOL_VERSION",
    "AdmissionDeniedError",
    "BadMagicError",
    "ClientInfo",
    "Connected",
    "DerpClient",
    "DerpClosedError",
    "DerpConnectError",
    "DerpError",
    "DerpEvent",
    "DerpProtocolError",
    "Disconnected",
    "FrameFormatError",
    "FrameReader",
    "FrameTooLargeError",
    "FrameTruncatedError",
    "FrameType",
    "HandshakeError",
    "Health",
    "HttpUpgradeError",
    "KeepAlive",
    "PeerGone",
    "PeerGoneReason",
    "PeerPresent",
    "PeerPresentFlags",
    "PingTimeoutError",
    "Pong",
    "ReconnectingDerpClient",
    "RecvPacket",
    "Restarting",
    "ServerInfo",
    "ServerKeyMismatchError",
    "encode_frame",
    "parse_derp_url",
    "parse_frame",
]
