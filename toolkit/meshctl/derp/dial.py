"""The client side of the DERP handshake, sans-IO: upgrade request → 101 → ServerKey → ClientInfo → ServerInfo.

    hs = ClientHandshake(url, host_header, path, private_key, info, pinned=None)
    first = hs.start()                      # bytes to send: the HTTP upgrade request
    for chunk in received: out = hs.receive(chunk)   # bytes to send (the ClientInfo frame, once), or b""
    hs.done -> True once ServerInfo arrived; hs.server_key, hs.server_info, hs.rest (bytes after ServerInfo)
    hs.eof()                                # the server closed: raises the error that explains it

Errors are typed: HttpUpgradeError (not a 101), ServerKeyMismatchError (not the pinned key, from the 101's
Derp-Public-Key header or from the ServerKey frame), BadMagicError, HandshakeError (frames out of order,
ServerInfo that does not open), AdmissionDeniedError (closed after ClientInfo, with the server's Health
text when it sent one). No I/O, no clock.
"""

from __future__ import annotations

from ..keys import DerpPrivateKey, DerpPublicKey, NodePrivateKey
from .errors import AdmissionDeniedError, HandshakeError, HttpUpgradeError, ServerKeyMismatchError
from .frames import MAX_INFO_LEN, FrameReader, FrameType
from .handshake import ClientInfo, ServerInfo, open_server_info, parse_server_key, seal_client_info
from .http import parse_response_head, upgrade_request

__all__ = ["ClientHandshake"]


class ClientHandshake:
    UPGRADE, SERVER_KEY, SERVER_INFO, DONE = "upgrade", "server-key", "server-info", "done"

    def __init__(self, url: str, host_header: str, path: str, private_key: NodePrivateKey | DerpPrivateKey,
                 info: ClientInfo, *, pinned: DerpPublicKey | None = None) -> None:
        self.url = url
        self._host = host_header
        self._path = path
        self._key = private_key
        self._info = info
        self._pinned = pinned
        self.phase = self.UPGRADE
        self._buf = bytearray()
        self._frames = FrameReader(limit=MAX_INFO_LEN)
        self._health = ""
        self.server_key: DerpPublicKey | None = None
        self.server_info: ServerInfo | None = None
        self.rest = b""

    @property
    def done(self) -> bool:
        return self.phase == self.DONE

    def start(self) -> bytes:
        return upgrade_request(self._host, self._path)

    def receive(self, data: bytes) -> bytes:
        """Feed received bytes; returns bytes to send (possibly empty)."""
        out = b""
        if self.phase == self.UPGRADE:
            self._buf += data
            parsed = parse_response_head(self._buf)
            if parsed is None:
                return out
            head, used = parsed
            if head.status != 101:
                raise HttpUpgradeError(f"DERP upgrade at {self.url} got HTTP {head.status} {head.reason}, want 101",
                                       status=head.status)
            pub_hex = head.header("derp-public-key").lower()
            if self._pinned is not None and pub_hex and pub_hex != self._pinned.raw.hex():
                raise ServerKeyMismatchError("nodekey:" + pub_hex, self._pinned.to_text())
            data = bytes(self._buf[used:])
            self._buf = bytearray()
            self.phase = self.SERVER_KEY
        if self.phase == self.DONE:
            raise HandshakeError("ClientHandshake.receive() after the handshake finished")
        self._frames.feed(data)
        frames = self._frames.frames()
        for i, frame in enumerate(frames):
            if self.phase == self.SERVER_KEY:
                if frame.type != FrameType.SERVER_KEY:
                    raise HandshakeError(f"first DERP frame is type 0x{frame.type:02x}, want ServerKey (0x01)")
                server_pub = parse_server_key(frame.payload)
                if self._pinned is not None and server_pub != self._pinned:
                    raise ServerKeyMismatchError(server_pub.to_text(), self._pinned.to_text())
                self.server_key = server_pub
                out += seal_client_info(self._key, server_pub, self._info)
                self.phase = self.SERVER_INFO
            elif frame.type == FrameType.HEALTH:
                self._health = frame.payload.decode("utf-8", "replace")
            elif frame.type == FrameType.SERVER_INFO:
                assert self.server_key is not None
                self.server_info = open_server_info(self._key, self.server_key, frame.payload)
                self.phase = self.DONE
                # frames right behind ServerInfo belong to the connection: hand them back as raw bytes
                self.rest = b"".join(bytes([f.type]) + len(f.payload).to_bytes(4, "big") + f.payload
                                     for f in frames[i + 1:]) + self._frames.take(b"")
                return out
            else:
                raise HandshakeError(f"DERP frame type 0x{frame.type:02x} before ServerInfo")
        return out

    def eof(self) -> None:
        """The server closed the connection before the handshake finished: raise why."""
        if self.phase == self.UPGRADE:
            raise HttpUpgradeError(f"DERP server {self.url} closed the connection during the HTTP upgrade")
        if self.phase == self.SERVER_KEY:
            raise HandshakeError(f"DERP server {self.url} closed the connection before sending its key")
        if self.phase == self.SERVER_INFO:
            why = f": {self._health}" if self._health else ""
            raise AdmissionDeniedError(
                f"DERP server {self.url} closed the connection after ClientInfo{why}",
                hint="is this node key registered with the control server (or the mesh key right)?")
