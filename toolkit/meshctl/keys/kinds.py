"""The key kinds of the mesh (DESIGN §2): machine, node (= WireGuard), disco, control and DERP server keys."""

from __future__ import annotations

from typing import ClassVar

from .base import PrivateKey, PublicKey

__all__ = [
    "PRIVATE_KINDS",
    "ControlPrivateKey",
    "ControlPublicKey",
    "DerpPrivateKey",
    "DerpPublicKey",
    "DiscoPrivateKey",
    "DiscoPublicKey",
    "MachinePrivateKey",
    "MachinePublicKey",
    "NodePrivateKey",
    "NodePublicKey",
]


class MachinePublicKey(PublicKey):
    """Identifies a machine to the control server for its whole life."""

    PREFIX = "mkey:"
    KIND = "machine public key"
    __slots__ = ()


class MachinePrivateKey(PrivateKey):
    PREFIX = "mprivkey:"
    KIND = "machine private key"
    PUBLIC: ClassVar[type[PublicKey]] = MachinePublicKey
    __slots__ = ()

    def public_key(self) -> MachinePublicKey:
        return MachinePublicKey(self._pub)


class NodePublicKey(PublicKey):
    """A node's WireGuard public key; also the address DERP forwards by."""

    PREFIX = "nodekey:"
    KIND = "node public key"
    __slots__ = ()


class NodePrivateKey(PrivateKey):
    PREFIX = "privkey:"
    KIND = "node private key"
    PUBLIC: ClassVar[type[PublicKey]] = NodePublicKey
    __slots__ = ()

    def public_key(self) -> NodePublicKey:
        return NodePublicKey(self._pub)


class DiscoPublicKey(PublicKey):
    """Seals discovery (disco) messages; new at every agent start."""

    PREFIX = "discokey:"
    KIND = "disco public key"
    __slots__ = ()


class DiscoPrivateKey(PrivateKey):
    PREFIX = "discoprivkey:"
    KIND = "disco private key"
    PUBLIC: ClassVar[type[PublicKey]] = DiscoPublicKey
    __slots__ = ()

    def public_key(self) -> DiscoPublicKey:
        return DiscoPublicKey(self._pub)


class ControlPublicKey(PublicKey):
    """The coordination server's key; pinned on every node."""

    PREFIX = "ctrlkey:"
    KIND = "control public key"
    __slots__ = ()


class ControlPrivateKey(PrivateKey):
    PREFIX = "ctrlprivkey:"
    KIND = "control private key"
    PUBLIC: ClassVar[type[PublicKey]] = ControlPublicKey
    __slots__ = ()

    def public_key(self) -> ControlPublicKey:
        return ControlPublicKey(self._pub)


class DerpPublicKey(PublicKey):
    """A DERP server's key. Text form is derper's (`nodekey:`), but the type is its own."""

    PREFIX = "nodekey:"
    KIND = "DERP server public key"
    __slots__ = ()


class DerpPrivateKey(PrivateKey):
    PREFIX = "privkey:"
    KIND = "DERP server private key"
    PUBLIC: ClassVar[type[PublicKey]] = DerpPublicKey
    __slots__ = ()

    def public_key(self) -> DerpPublicKey:
        return DerpPublicKey(self._pub)


#: kind name (as the CLI spells it) -> private key class
PRIVATE_KINDS: dict[str, type[PrivateKey]] = {
    "machine": MachinePrivateKey,
    "node": NodePrivateKey,
    "disco": DiscoPrivateKey,
    "control": ControlPrivateKey,
    "derp": DerpPrivateKey,
}
