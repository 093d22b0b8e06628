"""DERP v2 frames: wire constants, one frozen dataclass per frame type, an encoder and a sans-IO reader.

A frame is 1 byte type + 4 bytes big-endian length + payload (derp-and-stun-protocol.md §1-2).
`FrameReader` takes bytes in and hands complete `(type, payload)` pairs out; it refuses a frame
whose header announces more than its limit *before* buffering the body. `parse_frame` turns a
payload into a typed message; unknown types become `UnknownFrame` so callers can skip them.
No I/O, no clock.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from ..keys import NodePublicKey
from .errors import FrameFormatError, FrameTooLargeError, FrameTruncatedError

__all__ = [
    "DISCO_MAGIC",
    "FRAME_HEADER_LEN",
    "KEY_LEN",
    "MAGIC",
    "MAX_CLIENT_INFO_LEN",
    "MAX_FRAME_WRITE",
    "MAX_INFO_LEN",
    "MAX_PACKET_SIZE",
    "NONCE_LEN",
    "PROTOCOL_VERSION",
    "ClosePeer",
    "ForwardPacket",
    "Frame",
    "FrameReader",
    "FrameType",
    "Health",
    "KeepAlive",
    "NotePreferred",
    "PeerGone",
    "PeerGoneReason",
    "PeerPresent",
    "PeerPresentFlags",
    "Ping",
    "Pong",
    "RecvPacket",
    "Restarting",
    "SendPacket",
    "UnknownFrame",
    "WatchConns",
    "encode_frame",
    "frame_header",
    "is_disco",
    "parse_frame",
]

MAGIC = b"DERP\xf0\x9f\x94\x91"  # "DERP🔑"
PROTOCOL_VERSION = 2
MAX_PACKET_SIZE = 64 << 10
FRAME_HEADER_LEN = 5
KEY_LEN = 32
NONCE_LEN = 24
MAX_INFO_LEN = 1 << 20  # client-side cap on the ServerInfo box
MAX_CLIENT_INFO_LEN = 256 << 10
MAX_FRAME_WRITE = 10 << 20  # sanity cap on any frame we write
PING_LEN = 8
MAX_PING_ACCEPTED = 1000
DISCO_MAGIC = b"TS\xf0\x9f\x92\xac"  # "TS💬": disco messages ride their own queue

_HEADER = struct.Struct(">BI")


class FrameType(IntEnum):
    SERVER_KEY = 0x01
    CLIENT_INFO = 0x02
    SERVER_INFO = 0x03
    SEND_PACKET = 0x04
    RECV_PACKET = 0x05
    KEEP_ALIVE = 0x06
    NOTE_PREFERRED = 0x07
    PEER_GONE = 0x08
    PEER_PRESENT = 0x09
    FORWARD_PACKET = 0x0A
    WATCH_CONNS = 0x10
    CLOSE_PEER = 0x11
    PING = 0x12
    PONG = 0x13
    HEALTH = 0x14
    RESTARTING = 0x15


class PeerGoneReason(IntEnum):
    DISCONNECTED = 0x00
    NOT_HERE = 0x01
    MESH_CONN_BROKE = 0xF0  # local only, never on the wire


class PeerPresentFlags(IntFlag):
    NONE = 0
    REGULAR = 0x01
    MESH_PEER = 0x02
    PROBER = 0x04
    NOT_IDEAL = 0x08


def is_disco(packet: bytes) -> bool:
    """True if a relayed packet is a disco message (classified by its magic, like derper)."""
    return packet[:6] == DISCO_MAGIC


def frame_header(ftype: int, length: int) -> bytes:
    return _HEADER.pack(ftype, length)


def _frame(ftype: int, *parts: bytes) -> bytes:
    length = sum(len(p) for p in parts)
    if length > MAX_FRAME_WRITE:
        raise FrameFormatError(ftype, f"{length} bytes to write", f"at most {MAX_FRAME_WRITE}")
    return b"".join((_HEADER.pack(ftype, length), *parts))


@dataclass(frozen=True, slots=True)
class Frame:
    """A raw frame: type byte and payload, before interpretation."""

    type: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class SendPacket:
    dst: NodePublicKey
    data: bytes


@dataclass(frozen=True, slots=True)
class RecvPacket:
    src: NodePublicKey
    data: bytes


@dataclass(frozen=True, slots=True)
class ForwardPacket:
    src: NodePublicKey
    dst: NodePublicKey
    data: bytes


@dataclass(frozen=True, slots=True)
class KeepAlive:
    pass


@dataclass(frozen=True, slots=True)
class NotePreferred:
    preferred: bool


@dataclass(frozen=True, slots=True)
class PeerGone:
    key: NodePublicKey
    reason: PeerGoneReason = PeerGoneReason.DISCONNECTED


@dataclass(frozen=True, slots=True)
class PeerPresent:
    key: NodePublicKey
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    port: int = 0
    flags: PeerPresentFlags = PeerPresentFlags.NONE


@dataclass(frozen=True, slots=True)
class WatchConns:
    pass


@dataclass(frozen=True, slots=True)
class ClosePeer:
    key: NodePublicKey


@dataclass(frozen=True, slots=True)
class Ping:
    data: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    data: bytes


@dataclass(frozen=True, slots=True)
class Health:
    """Server health text for the client; empty text clears a previous problem."""

    text: str


@dataclass(frozen=True, slots=True)
class Restarting:
    reconnect_in_ms: int
    try_for_ms: int


@dataclass(frozen=True, slots=True)
class UnknownFrame:
    """A frame type this implementation does not know; readers skip it."""

    type: int
    payload: bytes


Message = (SendPacket | RecvPacket | ForwardPacket | KeepAlive | NotePreferred | PeerGone | PeerPresent
           | WatchConns | ClosePeer | Ping | Pong | Health | Restarting | UnknownFrame)


def _ip16(ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bytes:
    if ip is None:
        return bytes(16)
    if isinstance(ip, ipaddress.IPv4Address):
        return ipaddress.IPv6Address(b"\x00" * 10 + b"\xff\xff" + ip.packed).packed
    return ip.packed


def encode_frame(msg: Message) -> bytes:
    """The wire bytes of one message (header included)."""
    match msg:
        case SendPacket(dst, data):
            return _frame(FrameType.SEND_PACKET, dst.raw, data)
        case RecvPacket(src, data):
            return _frame(FrameType.RECV_PACKET, src.raw, data)
        case ForwardPacket(src, dst, data):
            return _frame(FrameType.FORWARD_PACKET, src.raw, dst.raw, data)
        case KeepAlive():
            return _frame(FrameType.KEEP_ALIVE)
        case NotePreferred(preferred):
            return _frame(FrameType.NOTE_PREFERRED, b"\x01" if preferred else b"\x00")
        case PeerGone(key, reason):
            return _frame(FrameType.PEER_GONE, key.raw, bytes([reason]))
        case PeerPresent(key, ip, port, flags):
            return _frame(FrameType.PEER_PRESENT, key.raw, _ip16(ip), struct.pack(">HB", port, int(flags)))
        case WatchConns():
            return _frame(FrameType.WATCH_CONNS)
        case ClosePeer(key):
            return _frame(FrameType.CLOSE_PEER, key.raw)
        case Ping(data):
            return _frame(FrameType.PING, data)
        case Pong(data):
            return _frame(FrameType.PONG, data)
        case Health(text):
            return _frame(FrameType.HEALTH, text.encode("utf-8"))
        case Restarting(reconnect_in_ms, try_for_ms):
            return _frame(FrameType.RESTARTING, struct.pack(">II", reconnect_in_ms, try_for_ms))
        case UnknownFrame(ftype, payload):
            return _frame(ftype, payload)
    raise TypeError(f"not a DERP message: {type(msg).__name__}")


def _key(ftype: int, payload: bytes, offset: int = 0) -> NodePublicKey:
    return NodePublicKey(payload[offset:offset + KEY_LEN])


def _need(ftype: int, payload: bytes, at_least: int, what: str) -> None:
    if len(payload) < at_least:
        raise FrameFormatError(ftype, f"{len(payload)} bytes", f"at least {at_least} ({what})")


def parse_frame(ftype: int, payload: bytes) -> Message:
    """Interpret one frame's payload. Raises FrameFormatError when the payload is too short for its type."""
    if ftype == FrameType.SEND_PACKET:
        _need(ftype, payload, KEY_LEN, "32-byte destination key")
        return SendPacket(_key(ftype, payload), payload[KEY_LEN:])
    if ftype == FrameType.RECV_PACKET:
        _need(ftype, payload, KEY_LEN, "32-byte source key")
        return RecvPacket(_key(ftype, payload), payload[KEY_LEN:])
    if ftype == FrameType.FORWARD_PACKET:
        _need(ftype, payload, 2 * KEY_LEN, "32-byte source and destination keys")
        return ForwardPacket(_key(ftype, payload), _key(ftype, payload, KEY_LEN), payload[2 * KEY_LEN:])
    if ftype == FrameType.KEEP_ALIVE:
        return KeepAlive()
    if ftype == FrameType.NOTE_PREFERRED:
        _need(ftype, payload, 1, "1 preferred byte")
        return NotePreferred(payload[0] != 0)
    if ftype == FrameType.PEER_GONE:
        _need(ftype, payload, KEY_LEN, "32-byte key")
        reason = payload[KEY_LEN] if len(payload) > KEY_LEN else 0
        try:
            why = PeerGoneReason(reason)
        except ValueError:
            why = PeerGoneReason.DISCONNECTED
        return PeerGone(_key(ftype, payload), why)
    if ftype == FrameType.PEER_PRESENT:
        _need(ftype, payload, KEY_LEN, "32-byte key")
        if len(payload) < KEY_LEN + 19:  # older servers send only the key
            return PeerPresent(_key(ftype, payload))
        ip6 = ipaddress.IPv6Address(payload[KEY_LEN:KEY_LEN + 16])
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ip6.ipv4_mapped or ip6
        port, flags = struct.unpack_from(">HB", payload, KEY_LEN + 16)
        return PeerPresent(_key(ftype, payload), ip, port, PeerPresentFlags(flags & 0x0F))
    if ftype == FrameType.WATCH_CONNS:
        return WatchConns()
    if ftype == FrameType.CLOSE_PEER:
        _need(ftype, payload, KEY_LEN, "32-byte key")
        return ClosePeer(_key(ftype, payload))
    if ftype == FrameType.PING:
        _need(ftype, payload, PING_LEN, "8-byte ping data")
        return Ping(payload[:PING_LEN])
    if ftype == FrameType.PONG:
        _need(ftype, payload, PING_LEN, "8-byte pong data")
        return Pong(payload[:PING_LEN])
    if ftype == FrameType.HEALTH:
        return Health(payload.decode("utf-8", errors="replace"))
    if ftype == FrameType.RESTARTING:
        _need(ftype, payload, 8, "two 4-byte durations")
        reconnect_in, try_for = struct.unpack_from(">II", payload)
        return Restarting(reconnect_in, try_for)
    return UnknownFrame(ftype, payload)


class FrameReader:
    """Sans-IO frame splitter: `feed(bytes)`, then iterate `frames()`; `limit` caps any announced length.

    The header is checked against `limit` as soon as its 5 bytes are present, so an oversized frame
    is refused without buffering its body. After an error the reader is poisoned and refuses more.
    """

    __slots__ = ("_buf", "_error", "_pos", "limit")

    def __init__(self, limit: int = MAX_PACKET_SIZE + 2 * KEY_LEN) -> None:
        self.limit = limit
        self._buf = bytearray()
        self._pos = 0
        self._error: Exception | None = None

    def feed(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._buf += data

    def frames(self) -> list[Frame]:
        """All complete frames buffered so far (possibly none); raises FrameTooLargeError at a bad header."""
        if self._error is not None:
            raise self._error
        out: list[Frame] = []
        buf, pos, end = self._buf, self._pos, len(self._buf)
        try:
            while end - pos >= FRAME_HEADER_LEN:
                ftype, length = _HEADER.unpack_from(buf, pos)
                if length > self.limit:
                    self._error = FrameTooLargeError(ftype, length, self.limit)
                    raise self._error
                stop = pos + FRAME_HEADER_LEN + length
                if stop > end:
                    break
                out.append(Frame(ftype, bytes(buf[pos + FRAME_HEADER_LEN:stop])))
                pos = stop
        finally:
            if pos:
                del buf[:pos]
            self._pos = 0
        return out

    def take(self, data: bytes) -> bytes:
        """Fast path for callers that split frames themselves: buffered bytes + `data`, buffer emptied.
        The caller must `feed()` back any incomplete tail."""
        if self._error is not None:
            raise self._error
        if not self._buf:
            return data
        out = bytes(self._buf) + data
        self._buf.clear()
        return out

    def fail(self, error: Exception) -> Exception:
        """Poison the reader (a fast-path caller found a bad header); returns the error to raise."""
        self._error = error
        return error

    def buffered(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buf)

    def check_eof(self) -> None:
        """At end of stream: raise FrameTruncatedError if a partial frame is buffered."""
        have = len(self._buf)
        if have == 0:
            return
        if have < FRAME_HEADER_LEN:
            raise FrameTruncatedError(have, FRAME_HEADER_LEN)
        _, length = _HEADER.unpack_from(self._buf, 0)
        raise FrameTruncatedError(have, FRAME_HEADER_LEN + length)
