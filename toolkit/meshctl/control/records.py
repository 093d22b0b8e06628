"""Rows of the control store as frozen dataclasses (the server's internal view, not the wire view)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..keys import DiscoPublicKey, MachinePublicKey, NodePublicKey
from ..wire import HostInfo

__all__ = ["ApiKeyRecord", "AuthKeyRecord", "NodeRecord", "UserRecord"]


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: int
    name: str
    created_at: float


@dataclass(frozen=True, slots=True)
class NodeRecord:
    id: int
    machine_key: MachinePublicKey
    node_key: NodePublicKey
    name: str
    ipv4: str
    ipv6: str
    created_at: float
    user_id: int | None = None
    disco_key: DiscoPublicKey | None = None
    tags: tuple[str, ...] = ()
    authorized: bool = False
    ephemeral: bool = False
    key_expiry: float | None = None
    expiry_disabled: bool = False
    hostinfo: HostInfo = field(default_factory=HostInfo)
    endpoints: tuple[str, ...] = ()
    home_derp: int = 0
    last_seen: float | None = None
    auth_key_id: str | None = None

    def is_expired(self, now: float) -> bool:
        return not self.expiry_disabled and self.key_expiry is not None and now >= self.key_expiry


@dataclass(frozen=True, slots=True)
class AuthKeyRecord:
    id: str
    user_id: int
    reusable: bool
    ephemeral: bool
    tags: tuple[str, ...]
    expires_at: float
    used: bool
    revoked: bool
    created_at: float
    secret_hash: str = field(repr=False, default="")


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: str
    expires_at: float | None
    revoked: bool
    created_at: float
    last_used_at: float | None
    secret_hash: str = field(repr=False, default="")
