"""Disco messages: the sealed side-channel packets that find and keep direct paths (pure codec).

Layout on the wire (reference §10): magic ``TS💬`` (6 bytes) ‖ sender disco public key (32) ‖
nonce (24) ‖ NaCl box of ``type(1) ‖ version(1) ‖ payload``. Payloads:

- Ping (0x01): 12-byte transaction id, optionally followed by the sender's 32-byte node key;
- Pong (0x02): transaction id ‖ the source address the responder saw (16-byte IP, 2-byte big-endian port);
- CallMeMaybe (0x03): the sender's endpoints, 18 bytes each (16-byte IP ‖ port), sent over DERP only.

IPv4 addresses travel as IPv4-mapped IPv6. Like tailscale's parser, Ping and Pong ignore trailing
bytes after their fixed fields (room for later versions); CallMeMaybe must be a whole number of endpoints.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import IntEnum

from ..keys import BoxOpenError, DiscoPrivateKey, DiscoPublicKey, NodePublicKey
from .errors import DiscoError

__all__ = [
    "MAGIC",
    "TX_ID_LEN",
    "CallMeMaybe",
    "Endpoint",
    "Message",
    "MessageType",
    "Ping",
    "Pong",
    "encode_message",
    "is_disco",
    "open_packet",
    "parse_message",
    "seal_packet",
    "sender_of",
]

MAGIC = "TS💬".encode()
TX_ID_LEN = 12
_KEY_LEN = 32
_NONCE_LEN = 24
_BOX_OVERHEAD = 16
_HEADER_LEN = len(MAGIC) + _KEY_LEN
_EP_LEN = 18
VERSION = 0


class MessageType(IntEnum):
    PING = 0x01
    PONG = 0x02
    CALL_ME_MAYBE = 0x03


@dataclass(frozen=True)
class Endpoint:
    """A UDP address: an IP (v4 or v6, canonical text) and a port."""

    ip: str
    port: int

    def __post_init__(self) -> None:
        addr = ipaddress.ip_address(self.ip)
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped  # one spelling per address: sockets report v4 peers as ::ffff:a.b.c.d
        object.__setattr__(self, "ip", str(addr))
        if not 0 <= self.port <= 0xFFFF:
            raise ValueError(f"port out of range: {self.port}")

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """`1.2.3.4:41641` or `[fd7a::1]:41641`."""
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"endpoint {text!r}: want ip:port")
        return cls(host.strip("[]"), int(port))

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"

    def with_port(self, port: int) -> Endpoint:
        return Endpoint(self.ip, port)

    def to_bytes(self) -> bytes:
        addr = ipaddress.ip_address(self.ip)
        raw = addr.packed if addr.version == 6 else b"\x00" * 10 + b"\xff\xff" + addr.packed
        return raw + struct.pack(">H", self.port)

    @classmethod
    def from_bytes(cls, data: bytes) -> Endpoint:
        addr = ipaddress.IPv6Address(data[:16])
        ip = addr.ipv4_mapped if addr.ipv4_mapped is not None else addr
        return cls(str(ip), struct.unpack(">H", data[16:18])[0])


@dataclass(frozen=True)
class Ping:
    tx_id: bytes
    node_key: NodePublicKey | None = None

    def __post_init__(self) -> None:
        if len(self.tx_id) != TX_ID_LEN:
            raise ValueError(f"tx_id: want {TX_ID_LEN} bytes, got {len(self.tx_id)}")

    def payload(self) -> bytes:
        return self.tx_id + (self.node_key.raw if self.node_key is not None else b"")


@dataclass(frozen=True)
class Pong:
    tx_id: bytes
    src: Endpoint

    def __post_init__(self) -> None:
        if len(self.tx_id) != TX_ID_LEN:
            raise ValueError(f"tx_id: want {TX_ID_LEN} bytes, got {len(self.tx_id)}")

    def payload(self) -> bytes:
        return self.tx_id + self.src.to_bytes()


@dataclass(frozen=True)
class CallMeMaybe:
    endpoints: tuple[Endpoint, ...]

    def payload(self) -> bytes:
        return b"".join(ep.to_bytes() for ep in self.endpoints)


Message = Ping | Pong | CallMeMaybe

_TYPES: dict[type[Ping] | type[Pong] | type[CallMeMaybe], MessageType] = {
    Ping: MessageType.PING,
    Pong: MessageType.PONG,
    CallMeMaybe: MessageType.CALL_ME_MAYBE,
}


def encode_message(msg: Message) -> bytes:
    """The plaintext inside the box: type ‖ version ‖ payload."""
    return bytes([_TYPES[type(msg)], VERSION]) + msg.payload()


def parse_message(data: bytes) -> Message:
    """Parse the plaintext of an opened disco box; raises DiscoError saying what was wrong."""
    if len(data) < 2:
        raise DiscoError(f"disco message too short: {len(data)} bytes, want at least 2 (type, version)")
    code, payload = data[0], data[2:]
    if code == MessageType.PING:
        if len(payload) < TX_ID_LEN:
            raise DiscoError(f"disco ping too short: {len(payload)} payload bytes, want at least {TX_ID_LEN}")
        key = NodePublicKey(payload[TX_ID_LEN:TX_ID_LEN + _KEY_LEN]) if len(payload) >= TX_ID_LEN + _KEY_LEN else None
        return Ping(payload[:TX_ID_LEN], key)
    if code == MessageType.PONG:
        want = TX_ID_LEN + _EP_LEN
        if len(payload) < want:
            raise DiscoError(f"disco pong too short: {len(payload)} payload bytes, want at least {want}")
        return Pong(payload[:TX_ID_LEN], Endpoint.from_bytes(payload[TX_ID_LEN:want]))
    if code == MessageType.CALL_ME_MAYBE:
        if len(payload) % _EP_LEN:
            raise DiscoError(f"disco call-me-maybe: {len(payload)} payload bytes is not a multiple of {_EP_LEN}")
        eps = tuple(Endpoint.from_bytes(payload[i:i + _EP_LEN]) for i in range(0, len(payload), _EP_LEN))
        return CallMeMaybe(eps)
    raise DiscoError(f"unknown disco message type 0x{code:02x}, want 0x01 ping, 0x02 pong or 0x03 call-me-maybe")


def is_disco(packet: bytes) -> bool:
    """True when the packet carries the disco magic and is long enough to hold a sealed message."""
    return len(packet) >= _HEADER_LEN + _NONCE_LEN + _BOX_OVERHEAD and packet.startswith(MAGIC)


def sender_of(packet: bytes) -> DiscoPublicKey:
    """The sender's disco public key, read from the clear header (authenticated only by open_packet)."""
    if not is_disco(packet):
        raise DiscoError(f"not a disco packet: {len(packet)} bytes starting {packet[:6].hex() or 'empty'}, "
                         f"want magic {MAGIC.hex()} and at least {_HEADER_LEN + _NONCE_LEN + _BOX_OVERHEAD} bytes")
    return DiscoPublicKey(packet[len(MAGIC):_HEADER_LEN])


def seal_packet(sender: DiscoPrivateKey, recipient: DiscoPublicKey, msg: Message, nonce: bytes | None = None) -> bytes:
    """A complete disco packet from `sender` to `recipient`."""
    sealed = sender.box(recipient).seal(encode_message(msg), nonce)
    return MAGIC + sender.public_key().raw + sealed


def open_packet(recipient: DiscoPrivateKey, packet: bytes) -> tuple[DiscoPublicKey, Message]:
    """Authenticate and parse a disco packet sent to `recipient`: (sender disco key, message)."""
    sender = sender_of(packet)
    try:
        plain = recipient.box(sender).open(packet[_HEADER_LEN:])
    except BoxOpenError:
        raise DiscoError(f"disco packet from {sender.short()} did not open: not sealed to our disco key") from None
    return sender, parse_message(plain)
