"""Errors of the coordination server and its node-side client.

    ControlError
    ├── ControlKeyMismatchError      the server's /key is not the pinned control key
    ├── ControlUnreachableError      connection refused / timed out / TLS failure
    ├── ControlHTTPError             the server answered with an HTTP error (status, code)
    │   └── RegistrationError        registration refused (reason, code)
    ├── SealError                    a sealed request/response failed to open or is stale/replayed
    ├── FrameError                   a map stream frame is malformed or too large
    ├── MapSequenceError             a map frame arrived out of order or a delta before the full map
    └── StoreError                   database problems (schema too new, not migrated, conflicts)
"""

from __future__ import annotations

from ..errors import MeshctlError

__all__ = [
    "ControlError",
    "ControlHTTPError",
    "ControlKeyMismatchError",
    "ControlUnreachableError",
    "FrameError",
    "MapSequenceError",
    "RegistrationError",
    "SchemaError",
    "SealError",
    "StoreError",
]


class ControlError(MeshctlError):
    """Something went wrong talking to, or inside, the coordination server."""


class ControlKeyMismatchError(ControlError):
    def __init__(self, pinned: str, served: str) -> None:
        super().__init__(f"control server presents key {served}, but {pinned} is pinned",
                         hint="check the control URL; if the control key was rotated, update the pinned key")
        self.pinned = pinned
        self.served = served


class ControlUnreachableError(ControlError):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach control server at {url}: {reason}")
        self.url = url
        self.reason = reason


class ControlHTTPError(ControlError):
    """The server answered with an error status; `code` is its machine-readable error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"control server refused the request ({status} {code}): {message}")
        self.status = status
        self.code = code
        self.server_message = message


class RegistrationError(ControlHTTPError):
    """Registration was refused; `reason` is the server's one-line explanation."""

    def __init__(self, reason: str, code: str = "registration_refused", status: int = 403) -> None:
        ControlError.__init__(self, f"registration refused: {reason}")
        self.status = status
        self.code = code
        self.server_message = reason
        self.reason = reason


class SealError(ControlError):
    """A sealed message failed to open, or is stale or replayed. `code` names the check that failed."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class FrameError(ControlError):
    """A map stream frame is malformed."""


class MapSequenceError(ControlError):
    def __init__(self, message: str, *, got: int, want: int | None) -> None:
        super().__init__(message)
        self.got = got
        self.want = want


class StoreError(ControlError):
    """The database refused an operation or is in the wrong state."""


class SchemaError(StoreError):
    """The database schema is not the one this meshctl knows (too new, or not migrated)."""
