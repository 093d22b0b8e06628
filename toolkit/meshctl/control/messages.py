"""Messages of the registration exchange (POST /machine/register) and GET /key.

These are control-protocol messages rather than shared wire types because one of them carries a
credential: `authKey`, the one-time or reusable pre-auth token a node presents once to join. It
travels only inside the NaCl box sealed to the control key, and the server stores only its hash.

Rotation: a node that replaces its node key sends `oldNodeKey` and `oldNodeKeyProof`, a box sealed
by the old node private key to the control public key over `"<new nodekey text>|<time>"`. Only
the holder of the old key can produce it; the server opens it with its own private key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..keys import BoxOpenError, ControlPrivateKey, ControlPublicKey, NodePrivateKey, NodePublicKey
from ..wire import HostInfo, Node
from ..wire._json import (
    WireFormatError,
    get_bool,
    get_key,
    get_obj,
    get_opt_key,
    get_opt_str,
    require_mapping,
)

__all__ = ["KeyInfo", "RegisterRequest", "RegisterResponse", "make_rotation_proof", "verify_rotation_proof"]


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """GET /key."""

    control_key: ControlPublicKey
    protocol: int = 1

    def to_json(self) -> dict[str, Any]:
        return {"controlKey": self.control_key.to_text(), "protocol": self.protocol}

    @classmethod
    def from_json(cls, data: Any) -> KeyInfo:
        d = require_mapping(data, "KeyInfo")
        proto = d.get("protocol", 1)
        if not isinstance(proto, int):
            raise WireFormatError("KeyInfo: field 'protocol' want an integer", field="protocol")
        return cls(get_key(d, "controlKey", "KeyInfo", ControlPublicKey.from_text), proto)


@dataclass(frozen=True, slots=True)
class RegisterRequest:
    node_key: NodePublicKey
    hostinfo: HostInfo
    auth_key: str | None = None
    old_node_key: NodePublicKey | None = None
    old_node_key_proof: str | None = None

    def __repr__(self) -> str:  # never show the auth key
        return f"RegisterRequest(node_key={self.node_key.short()}, auth_key={'<set>' if self.auth_key else None})"

    def to_json(self) -> dict[str, Any]:
        return {
            "nodeKey": self.node_key.to_text(), "hostinfo": self.hostinfo.to_json(), "authKey": self.auth_key,
            "oldNodeKey": None if self.old_node_key is None else self.old_node_key.to_text(),
            "oldNodeKeyProof": self.old_node_key_proof,
        }

    @classmethod
    def from_json(cls, data: Any) -> RegisterRequest:
        w = "RegisterRequest"
        d = require_mapping(data, w)
        hostinfo = get_obj(d, "hostinfo", w, HostInfo.from_json) or HostInfo()
        return cls(
            node_key=get_key(d, "nodeKey", w, NodePublicKey.from_text), hostinfo=hostinfo,
            auth_key=get_opt_str(d, "authKey", w) or None,
            old_node_key=get_opt_key(d, "oldNodeKey", w, NodePublicKey.from_text),
            old_node_key_proof=get_opt_str(d, "oldNodeKeyProof", w),
        )


@dataclass(frozen=True, slots=True)
class RegisterResponse:
    machine_authorized: bool
    node_key_expired: bool = False
    node: Node | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"machineAuthorized": self.machine_authorized, "nodeKeyExpired": self.node_key_expired,
                "node": None if self.node is None else self.node.to_json(), "error": self.error}

    @classmethod
    def from_json(cls, data: Any) -> RegisterResponse:
        w = "RegisterResponse"
        d = require_mapping(data, w)
        return cls(
            machine_authorized=get_bool(d, "machineAuthorized", w),
            node_key_expired=get_bool(d, "nodeKeyExpired", w, False),
            node=get_obj(d, "node", w, Node.from_json), error=get_opt_str(d, "error", w) or None,
        )


def _proof_payload(new_key: NodePublicKey, t: int) -> bytes:
    return f"{new_key.to_text()}|{t}".encode()


def make_rotation_proof(old: NodePrivateKey, new_key: NodePublicKey, control: ControlPublicKey, now: float) -> str:
    """Hex of box(old_node_priv → control_pub, "<new nodekey>|<unix time>")."""
    return old.box(control).seal(_proof_payload(new_key, int(now))).hex()


def verify_rotation_proof(proof: str, old_key: NodePublicKey, new_key: NodePublicKey,
                          control: ControlPrivateKey, now: float, window: float) -> str | None:
    """None when the proof is valid; otherwise the reason it is not."""
    try:
        plain = control.box(old_key).open(bytes.fromhex(proof))
    except (ValueError, BoxOpenError):
        return "oldNodeKeyProof does not open with oldNodeKey: the old node key was not proven"
    key_text, _, t_text = plain.decode("ascii", "replace").partition("|")
    if key_text != new_key.to_text():
        return "oldNodeKeyProof was made for a different new node key"
    try:
        t = int(t_text)
    except ValueError:
        return "oldNodeKeyProof carries no time"
    if abs(now - t) > window:
        return f"oldNodeKeyProof is stale ({int(now - t)} s old, window ±{int(window)} s)"
    return None

