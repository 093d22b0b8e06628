"""The DERP handshake (sans-IO): ServerKey → ClientInfo → ServerInfo, sealed with NaCl box.

ClientInfo's payload is `client_pub32 ‖ nonce24 ‖ box(json)` sealed between the client's node key and
the server's key; ServerInfo is `nonce24 ‖ box(json)` sealed the other way. JSON field names are exactly
derper's: `version`, `meshKey` (lower-case), `CanAckPings`, `IsProber`, `AppName`;
ServerInfo: `version`, `TokenBucketBytesPerSecond`, `TokenBucketBytesBurst`.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..keys import BoxOpenError, DerpPrivateKey, DerpPublicKey, KeyFormatError, NodePrivateKey, NodePublicKey
from .errors import BadMagicError, FrameFormatError, HandshakeError
from .frames import KEY_LEN, MAGIC, MAX_CLIENT_INFO_LEN, NONCE_LEN, PROTOCOL_VERSION, FrameType, _frame

__all__ = [
    "ClientInfo",
    "ServerInfo",
    "encode_server_key",
    "mesh_key_matches",
    "open_client_info",
    "open_server_info",
    "parse_mesh_key",
    "parse_mesh_key_file",
    "parse_server_key",
    "seal_client_info",
    "seal_server_info",
]

_MIN_CLIENT_INFO = KEY_LEN + NONCE_LEN
_BOX_OVERHEAD = 16


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """What a client tells the server about itself (inside the box)."""

    version: int = PROTOCOL_VERSION
    mesh_key: str | None = None
    can_ack_pings: bool = True
    is_prober: bool = False
    app_name: str = "meshctl"

    def to_json(self) -> bytes:
        obj: dict[str, Any] = {"version": self.version}
        if self.mesh_key:
            obj["meshKey"] = self.mesh_key
        obj.update(CanAckPings=self.can_ack_pings, IsProber=self.is_prober, AppName=self.app_name)
        return json.dumps(obj, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ClientInfo:
        obj = _json_object(data, "ClientInfo")
        mesh_key = obj.get("meshKey")
        return cls(
            version=_int(obj.get("version", 0), "ClientInfo version"),
            mesh_key=mesh_key if isinstance(mesh_key, str) and mesh_key else None,
            can_ack_pings=bool(obj.get("CanAckPings", False)),
            is_prober=bool(obj.get("IsProber", False)),
            app_name=str(obj.get("AppName", "")),
        )

    def __repr__(self) -> str:  # the mesh key is a secret
        mk = "<redacted>" if self.mesh_key else None
        return (f"ClientInfo(version={self.version}, mesh_key={mk}, can_ack_pings={self.can_ack_pings}, "
                f"is_prober={self.is_prober}, app_name={self.app_name!r})")


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What the server tells an admitted client (inside the box); 0 means no token bucket."""

    version: int = PROTOCOL_VERSION
    token_bucket_bytes_per_second: int = 0
    token_bucket_bytes_burst: int = 0

    def to_json(self) -> bytes:
        obj: dict[str, Any] = {"version": self.version}
        if self.token_bucket_bytes_per_second:
            obj["TokenBucketBytesPerSecond"] = self.token_bucket_bytes_per_second
        if self.token_bucket_bytes_burst:
            obj["TokenBucketBytesBurst"] = self.token_bucket_bytes_burst
        return json.dumps(obj, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ServerInfo:
        obj = _json_object(data, "ServerInfo")
        return cls(
            version=_int(obj.get("version", 0), "ServerInfo version"),
            token_bucket_bytes_per_second=_int(obj.get("TokenBucketBytesPerSecond", 0), "TokenBucketBytesPerSecond"),
            token_bucket_bytes_burst=_int(obj.get("TokenBucketBytesBurst", 0), "TokenBucketBytesBurst"),
        )


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise HandshakeError(f"{what}: box content is not JSON") from None
    if not isinstance(obj, dict):
        raise HandshakeError(f"{what}: want a JSON object, got {type(obj).__name__}")
    return obj


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise HandshakeError(f"{what}: want an integer, got {type(value).__name__}")
    return value


def encode_server_key(server_pub: DerpPublicKey) -> bytes:
    """The ServerKey frame: magic ‖ server public key."""
    return _frame(FrameType.SERVER_KEY, MAGIC, server_pub.raw)


def parse_server_key(payload: bytes) -> DerpPublicKey:
    """Check the magic and return the server's key; trailing reserved bytes are ignored."""
    if len(payload) < len(MAGIC) + KEY_LEN:
        raise FrameFormatError(FrameType.SERVER_KEY, f"{len(payload)} bytes", f"at least {len(MAGIC) + KEY_LEN}")
    if payload[:len(MAGIC)] != MAGIC:
        raise BadMagicError(bytes(payload[:len(MAGIC)]))
    return DerpPublicKey(payload[len(MAGIC):len(MAGIC) + KEY_LEN])


def seal_client_info(client: NodePrivateKey | DerpPrivateKey, server_pub: DerpPublicKey, info: ClientInfo,
                     *, nonce: bytes | None = None) -> bytes:
    """The ClientInfo frame: our public key ‖ nonce ‖ box(json). (Mesh peers use their DERP key as client key.)"""
    sealed = client.box(server_pub).seal(info.to_json(), nonce)
    return _frame(FrameType.CLIENT_INFO, client.public_key().raw, sealed)


def open_client_info(server: DerpPrivateKey, payload: bytes) -> tuple[NodePublicKey, ClientInfo]:
    """Server side: who is this client and what does it say. Raises HandshakeError if the box does not open."""
    if len(payload) < _MIN_CLIENT_INFO:
        raise FrameFormatError(FrameType.CLIENT_INFO, f"{len(payload)} bytes", f"at least {_MIN_CLIENT_INFO}")
    if len(payload) > MAX_CLIENT_INFO_LEN:
        raise FrameFormatError(FrameType.CLIENT_INFO, f"{len(payload)} bytes", f"at most {MAX_CLIENT_INFO_LEN}")
    client_pub = NodePublicKey(payload[:KEY_LEN])
    try:
        plain = server.box(client_pub).open(payload[KEY_LEN:])
    except BoxOpenError as e:
        raise HandshakeError(f"ClientInfo from {client_pub.short()}: {e}") from None
    return client_pub, ClientInfo.from_json(plain)


def seal_server_info(server: DerpPrivateKey, client_pub: NodePublicKey, info: ServerInfo,
                     *, nonce: bytes | None = None) -> bytes:
    return _frame(FrameType.SERVER_INFO, server.box(client_pub).seal(info.to_json(), nonce))


def open_server_info(client: NodePrivateKey | DerpPrivateKey, server_pub: DerpPublicKey,
                     payload: bytes) -> ServerInfo:
    if len(payload) < NONCE_LEN + _BOX_OVERHEAD:
        raise FrameFormatError(FrameType.SERVER_INFO, f"{len(payload)} bytes",
                               f"at least {NONCE_LEN + _BOX_OVERHEAD}")
    try:
        plain = client.box(server_pub).open(payload)
    except BoxOpenError as e:
        raise HandshakeError(f"ServerInfo from {server_pub.short()}: {e}") from None
    return ServerInfo.from_json(plain)


def parse_mesh_key(text: str) -> str:
    """Validate a mesh key: 64 lowercase hex characters (whitespace trimmed), like derper's --mesh-psk-file."""
    key = text.strip()
    if len(key) != 64:
        raise KeyFormatError(f"DERP mesh key: want 64 hex characters, got {len(key)}")
    try:
        bytes.fromhex(key)
    except ValueError:
        raise KeyFormatError("DERP mesh key: want hex digits 0-9a-f") from None
    return key.lower()


def parse_mesh_key_file(text: str) -> list[str]:
    """A mesh-key file: one key per line (blank lines ignored). The first is the key this relay dials with;
    every listed key is accepted from peers, which lets `meshctl rotate derp-mesh-key` overlap old and new."""
    keys = [parse_mesh_key(line) for line in text.splitlines() if line.strip()]
    if not keys:
        raise KeyFormatError("DERP mesh key file holds no key")
    return list(dict.fromkeys(keys))


def mesh_key_matches(offered: str | None, ours: str | Sequence[str] | None) -> bool:
    """Constant-time mesh key comparison (TS-2025-003) against one or several accepted keys; every key is
    compared (no early exit). No key configured means nobody is a mesh peer."""
    if not ours or not offered:
        return False
    accepted = [ours] if isinstance(ours, str) else list(ours)
    got = offered.encode("utf-8", "replace")
    match = False
    for key in accepted:
        match |= hmac.compare_digest(got, key.encode())
    return match
