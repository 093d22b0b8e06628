"""Errors of the STUN codec and client, named like tailscale's net/stun (ErrNotSTUN, ErrMalformedAttrs, ...)."""

from __future__ import annotations

from ..errors import MeshctlError, RemoteProtocolError

__all__ = ["MalformedAttrsError", "NotStunError", "StunError", "StunParseError", "StunTimeoutError",
           "WrongFingerprintError", "WrongTransactionError"]


class StunError(MeshctlError):
    """Base of the STUN package's errors."""


class StunParseError(StunError, RemoteProtocolError):
    """A datagram is not a STUN message we accept."""


class NotStunError(StunParseError):
    """Not a STUN packet (short, wrong cookie, top bits set, length mismatch) or not the wanted type."""

    def __init__(self, found: str, wanted: str = "a STUN binding message") -> None:
        self.found = found
        self.wanted = wanted
        super().__init__(f"not a STUN packet: got {found}, want {wanted}")


class MalformedAttrsError(StunParseError):
    """The attribute list runs past the message or is otherwise malformed."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"malformed STUN attributes: {detail}")


class WrongFingerprintError(StunParseError):
    """FINGERPRINT present but wrong, or not the last attribute."""

    def __init__(self, found: int, wanted: int) -> None:
        self.found = found
        self.wanted = wanted
        super().__init__(f"STUN FINGERPRINT is 0x{found:08x}, want 0x{wanted:08x}")


class WrongTransactionError(StunParseError):
    """A response answers some other request."""


class StunTimeoutError(StunError):
    """No STUN response arrived in time."""

    def __init__(self, server: str, timeout: float) -> None:
        self.server = server
        self.timeout = timeout
        super().__init__(f"no STUN response from {server} within {timeout:g}s",
                         hint="is UDP to the STUN port blocked?")
