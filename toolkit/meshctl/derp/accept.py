"""The server side of a DERP connection before relaying, sans-IO: HTTP request → 101 + ServerKey → ClientInfo.

`ServerHandshake.receive(data)` takes bytes as they arrive and returns events for the shell (`conn.Conn`):

- `Send(data, close)`: bytes to write; with `close`, close the connection once they are flushed
  (426 for `/derp` without the upgrade, 400 for WebSocket DERP, which is not served);
- `Request(request)`: an ordinary HTTP request (probe, generate_204, metrics, ...): the shell answers it;
- `Hello(key, info, rest)`: the client's ClientInfo opened; `rest` holds every byte received after it.

Bad input raises `HttpUpgradeError` (before the upgrade) or a `DerpProtocolError` (after it); a frame header
announcing more than 256 KiB is refused before its body is buffered. No I/O and no clock: the shell
enforces the deadline. The private key stays with the caller: ClientInfo is opened by the `open_client_info`
function passed in.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from ..keys import NodePublicKey
from .errors import DerpProtocolError, FrameTooLargeError
from .frames import FRAME_HEADER_LEN, MAX_CLIENT_INFO_LEN, FrameType
from .handshake import ClientInfo
from .http import MAX_HEAD_LEN, HttpRequest, parse_request_head, plain_response, upgrade_response

__all__ = ["Hello", "Request", "Send", "ServerHandshake"]

_HEADER = struct.Struct(">BI")


@dataclass(frozen=True, slots=True)
class Send:
    data: bytes
    close: bool = False


@dataclass(frozen=True, slots=True)
class Request:
    request: HttpRequest


@dataclass(frozen=True, slots=True)
class Hello:
    key: NodePublicKey
    info: ClientInfo
    rest: bytes


Event = Send | Request | Hello


class ServerHandshake:
    """One connection's pre-relay state: HTTP, then waiting for ClientInfo, then done."""

    HTTP, CLIENT_INFO, DONE = "http", "client-info", "done"

    def __init__(self, server_pub_hex: str, server_key_frame: bytes,
                 open_client_info: Callable[[bytes], tuple[NodePublicKey, ClientInfo]]) -> None:
        self._pub_hex = server_pub_hex
        self._server_key_frame = server_key_frame
        self._open = open_client_info
        self.phase = self.HTTP
        self._buf = bytearray()
        self._scanned = 0

    def receive(self, data: bytes) -> list[Event]:
        if self.phase == self.DONE:
            raise DerpProtocolError("data after the handshake was handed over")
        self._buf += data
        events: list[Event] = []
        if self.phase == self.HTTP:
            # look for the end of the head only in the new bytes, so a byte-at-a-time sender costs linear time
            if self._buf.find(b"\r\n\r\n", max(0, self._scanned - 3)) < 0 and len(self._buf) <= MAX_HEAD_LEN:
                self._scanned = len(self._buf)
                return events
            parsed = parse_request_head(self._buf)
            if parsed is None:
                return events
            req, used = parsed
            del self._buf[:used]
            if req.path != "/derp":
                self.phase = self.DONE
                return [Request(req)]
            head_only = req.method == "HEAD"
            if not req.wants_derp_upgrade:
                self.phase = self.DONE
                return [Send(plain_response(426, b"DERP requires connection upgrade", head_only=head_only), True)]
            if req.header("upgrade").lower() == "websocket":
                self.phase = self.DONE
                return [Send(plain_response(400, b"meshctl DERP does not serve DERP over WebSocket; use Upgrade: DERP",
                                            head_only=head_only), True)]
            fast = req.header("derp-fast-start") == "1"  # the client skips waiting for the 101
            events.append(Send((b"" if fast else upgrade_response(self._pub_hex)) + self._server_key_frame))
            self.phase = self.CLIENT_INFO
        hello = self._client_info()
        if hello is not None:
            events.append(hello)
        return events

    def _client_info(self) -> Hello | None:
        if len(self._buf) < FRAME_HEADER_LEN:
            return None
        ftype, length = _HEADER.unpack_from(self._buf)
        if ftype != FrameType.CLIENT_INFO:
            raise DerpProtocolError(f"first DERP frame is type 0x{ftype:02x}, want ClientInfo (0x02)")
        if length > MAX_CLIENT_INFO_LEN:
            raise FrameTooLargeError(ftype, length, MAX_CLIENT_INFO_LEN)
        end = FRAME_HEADER_LEN + length
        if len(self._buf) < end:
            return None
        key, info = self._open(bytes(self._buf[FRAME_HEADER_LEN:end]))
        rest = bytes(self._buf[end:])
        self._buf = bytearray()
        self.phase = self.DONE
        return Hello(key, info, rest)
