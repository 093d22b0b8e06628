"""Errors of the DERP relay and client: typed, with fields saying what was found and what was wanted.

    DerpError (MeshctlError)
    ├── DerpProtocolError (+RemoteProtocolError)   the peer broke the DERP wire protocol
    │   ├── FrameTooLargeError                      a frame header announced more than the reader allows
    │   ├── FrameTruncatedError                     the stream ended inside a frame
    │   ├── FrameFormatError                        a frame's payload has the wrong shape for its type
    │   ├── BadMagicError                           ServerKey without the "DERP🔑" magic
    │   └── HandshakeError                          ClientInfo/ServerInfo could not be opened or parsed
    ├── HttpUpgradeError                            the HTTP upgrade to DERP failed (status, header, size)
    ├── DerpConnectError                            could not reach the server (refused, TLS, timeout)
    ├── DerpClosedError                             the connection is closed (by us or the peer)
    ├── ServerKeyMismatchError                      the server's key is not the pinned one
    ├── AdmissionDeniedError                        the server refused this node key
    └── PingTimeoutError                            no Pong within the timeout
"""

from __future__ import annotations

from ..errors import MeshctlError, RemoteProtocolError

__all__ = [
    "AdmissionDeniedError",
    "BadMagicError",
    "DerpClosedError",
    "DerpConnectError",
    "DerpError",
    "DerpProtocolError",
    "FrameFormatError",
    "FrameTooLargeError",
    "FrameTruncatedError",
    "HandshakeError",
    "HttpUpgradeError",
    "PingTimeoutError",
    "ServerKeyMismatchError",
]


class DerpError(MeshctlError):
    """Base of the DERP package's errors."""


class DerpProtocolError(DerpError, RemoteProtocolError):
    """The peer sent bytes the DERP protocol does not allow."""


class FrameTooLargeError(DerpProtocolError):
    """A frame header announced a length above the reader's limit; refused before reading the body."""

    def __init__(self, frame_type: int, length: int, limit: int) -> None:
        self.frame_type = frame_type
        self.length = length
        self.limit = limit
        super().__init__(f"DERP frame type 0x{frame_type:02x} announces {length} bytes, limit is {limit}")


class FrameTruncatedError(DerpProtocolError):
    """The stream ended inside a frame header or body."""

    def __init__(self, have: int, want: int) -> None:
        self.have = have
        self.want = want
        super().__init__(f"DERP stream ended inside a frame: have {have} bytes, want {want}")


class FrameFormatError(DerpProtocolError):
    """A frame's payload does not have the layout its type requires."""

    def __init__(self, frame_type: int, found: str, wanted: str) -> None:
        self.frame_type = frame_type
        self.found = found
        self.wanted = wanted
        super().__init__(f"DERP frame type 0x{frame_type:02x}: got {found}, want {wanted}")


class BadMagicError(DerpProtocolError):
    """A ServerKey frame did not start with the DERP magic."""

    def __init__(self, found: bytes) -> None:
        self.found = found
        super().__init__(f"DERP ServerKey magic is {found.hex()}, want 44455250f09f9491 ('DERP🔑')")


class HandshakeError(DerpProtocolError):
    """ClientInfo or ServerInfo failed: wrong frame order, box did not open, JSON malformed."""


class HttpUpgradeError(DerpError):
    """The HTTP request or response around the DERP upgrade was wrong."""

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None) -> None:
        self.status = status
        super().__init__(message, hint=hint)


class DerpConnectError(DerpError):
    """The DERP server could not be reached (refused, unreachable, TLS failure, timeout)."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot connect to DERP server {url}: {reason}")


class DerpClosedError(DerpError):
    """The DERP connection is closed."""


class ServerKeyMismatchError(DerpError):
    """The server presented a different key from the one pinned in the DERP map."""

    def __init__(self, found: str, wanted: str) -> None:
        self.found = found
        self.wanted = wanted
        super().__init__(f"DERP server key is {found}, want pinned {wanted}",
                         hint="the DERP map's key for this node is stale, or this is not the right server")


class AdmissionDeniedError(DerpError):
    """The server closed the connection after ClientInfo: this node key was not admitted."""


class PingTimeoutError(DerpError):
    """A DERP Ping got no Pong in time."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        super().__init__(f"no DERP pong from {url} within {timeout:g}s")
