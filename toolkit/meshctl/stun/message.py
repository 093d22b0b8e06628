"""STUN binding messages (RFC 5389/8489), sans-IO: build and parse requests and responses.

Requests are accepted both plain (any well-formed binding request) and Tailscale-style
(SOFTWARE "tailnode" + FINGERPRINT last; derp-and-stun-protocol.md §8). A FINGERPRINT, when
present, must be the last attribute and correct. Responses carry one XOR-MAPPED-ADDRESS and
nothing else, so they stay small (see `response_allowed`). Parsing a response also accepts
MAPPED-ADDRESS (0x0001) and the pre-RFC XOR-MAPPED-ADDRESS (0x8020).
"""

from __future__ import annotations

import ipaddress
import os
import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum

from .errors import MalformedAttrsError, NotStunError, WrongFingerprintError, WrongTransactionError

__all__ = [
    "HEADER_LEN",
    "MAGIC_COOKIE",
    "SOFTWARE_TAILNODE",
    "Attr",
    "BindingRequest",
    "BindingResponse",
    "MessageType",
    "build_request",
    "build_response",
    "is_stun",
    "new_transaction_id",
    "parse_request",
    "parse_response",
    "response_allowed",
]

HEADER_LEN = 20
MAGIC_COOKIE = 0x2112A442
_COOKIE = MAGIC_COOKIE.to_bytes(4, "big")
FINGERPRINT_XOR = 0x5354554E
SOFTWARE_TAILNODE = b"tailnode"
TXID_LEN = 12
#: a response may be at most this many times the request's size (no amplification) ...
MAX_AMPLIFICATION = 1.5
#: ... except that the smallest possible answer (IPv4, 32 bytes) is always allowed.
MIN_RESPONSE_ALLOWANCE = 32

_HDR = struct.Struct(">HH4s12s")
_ATTR = struct.Struct(">HH")


class MessageType(IntEnum):
    BINDING_REQUEST = 0x0001
    BINDING_SUCCESS = 0x0101
    BINDING_ERROR = 0x0111


class Attr(IntEnum):
    MAPPED_ADDRESS = 0x0001
    USERNAME = 0x0006
    MESSAGE_INTEGRITY = 0x0008
    ERROR_CODE = 0x0009
    XOR_MAPPED_ADDRESS = 0x0020
    XOR_MAPPED_ADDRESS_OLD = 0x8020
    SOFTWARE = 0x8022
    FINGERPRINT = 0x8028


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class BindingRequest:
    txid: bytes
    software: bytes | None
    has_fingerprint: bool

    @property
    def tailscale_style(self) -> bool:
        return self.software == SOFTWARE_TAILNODE and self.has_fingerprint


@dataclass(frozen=True, slots=True)
class BindingResponse:
    txid: bytes
    ip: IPAddress
    port: int


def new_transaction_id() -> bytes:
    return os.urandom(TXID_LEN)


def _fingerprint(data: bytes) -> int:
    return (zlib.crc32(data) & 0xFFFFFFFF) ^ FINGERPRINT_XOR


def _pad(n: int) -> int:
    return (n + 3) & ~3


def is_stun(data: bytes) -> bool:
    """Cheap demultiplexing check: length, top two bits and magic cookie."""
    return len(data) >= HEADER_LEN and data[0] & 0xC0 == 0 and data[4:8] == _COOKIE


def _header(data: bytes, want_type: MessageType) -> tuple[bytes, list[tuple[int, bytes, int]]]:
    """Validate the header and split the attributes: (txid, [(type, value, offset of attr)])."""
    if len(data) < HEADER_LEN:
        raise NotStunError(f"{len(data)} bytes", f"at least {HEADER_LEN}")
    mtype, length, cookie, txid = _HDR.unpack_from(data)
    if mtype & 0xC000:
        raise NotStunError(f"first byte 0x{data[0]:02x} (top bits set)", "top two bits zero")
    if cookie != _COOKIE:
        raise NotStunError(f"magic cookie {cookie.hex()}", f"{MAGIC_COOKIE:08x}")
    if mtype != want_type:
        raise NotStunError(f"message type 0x{mtype:04x}", f"0x{int(want_type):04x} ({want_type.name})")
    if length % 4 or HEADER_LEN + length != len(data):
        raise NotStunError(f"length field {length} for {len(data) - HEADER_LEN} attribute bytes",
                           "a multiple of 4 matching the datagram")
    attrs: list[tuple[int, bytes, int]] = []
    pos = HEADER_LEN
    while pos < len(data):
        if len(data) - pos < _ATTR.size:
            raise MalformedAttrsError(f"{len(data) - pos} stray bytes at offset {pos}")
        atype, alen = _ATTR.unpack_from(data, pos)
        end = pos + _ATTR.size + alen
        if end > len(data):
            raise MalformedAttrsError(
                f"attribute 0x{atype:04x} at offset {pos} runs {end - len(data)} bytes past the end")
        attrs.append((atype, data[pos + _ATTR.size:end], pos))
        pos = pos + _ATTR.size + _pad(alen)
    if pos != len(data):
        raise MalformedAttrsError("last attribute's padding runs past the end")
    for i, (atype, value, offset) in enumerate(attrs):
        if atype != Attr.FINGERPRINT:
            continue
        if i != len(attrs) - 1:
            raise MalformedAttrsError("FINGERPRINT is not the last attribute")
        if len(value) != 4:
            raise MalformedAttrsError(f"FINGERPRINT is {len(value)} bytes, want 4")
        found = int.from_bytes(value, "big")
        wanted = _fingerprint(data[:offset])
        if found != wanted:
            raise WrongFingerprintError(found, wanted)
    return txid, attrs


def parse_request(data: bytes) -> BindingRequest:
    """Parse a binding request; raises NotStunError, MalformedAttrsError or WrongFingerprintError."""
    txid, attrs = _header(data, MessageType.BINDING_REQUEST)
    software = next((v for t, v, _ in attrs if t == Attr.SOFTWARE), None)
    has_fp = bool(attrs) and attrs[-1][0] == Attr.FINGERPRINT
    return BindingRequest(txid, software, has_fp)


def build_request(txid: bytes | None = None, *, software: bytes | None = SOFTWARE_TAILNODE,
                  fingerprint: bool = True) -> bytes:
    """A binding request; by default Tailscale-style (SOFTWARE "tailnode" + FINGERPRINT)."""
    txid = new_transaction_id() if txid is None else txid
    if len(txid) != TXID_LEN:
        raise ValueError(f"STUN transaction id must be {TXID_LEN} bytes, got {len(txid)}")
    body = b""
    if software is not None:
        body += _ATTR.pack(Attr.SOFTWARE, len(software)) + software + b"\x00" * (_pad(len(software)) - len(software))
    length = len(body) + (8 if fingerprint else 0)
    msg = _HDR.pack(MessageType.BINDING_REQUEST, length, _COOKIE, txid) + body
    if fingerprint:
        msg += _ATTR.pack(Attr.FINGERPRINT, 4) + _fingerprint(msg).to_bytes(4, "big")
    return msg


def _xor_address(value: bytes, txid: bytes, xor: bool) -> tuple[IPAddress, int]:
    if len(value) < 4:
        raise MalformedAttrsError(f"address attribute is {len(value)} bytes, want at least 4")
    family, port = value[1], int.from_bytes(value[2:4], "big")
    want = {1: 4, 2: 16}.get(family)
    if want is None:
        raise MalformedAttrsError(f"address family {family}, want 1 (IPv4) or 2 (IPv6)")
    raw = value[4:]
    if len(raw) != want:
        raise MalformedAttrsError(f"IPv{4 if family == 1 else 6} address is {len(raw)} bytes, want {want}")
    if xor:
        port ^= MAGIC_COOKIE >> 16
        mask = (_COOKIE + txid)[:want]
        raw = bytes(a ^ b for a, b in zip(raw, mask, strict=True))
    ip: IPAddress = ipaddress.IPv4Address(raw) if family == 1 else ipaddress.IPv6Address(raw)
    return ip, port


def build_response(txid: bytes, ip: IPAddress, port: int) -> bytes:
    """A binding success response carrying only XOR-MAPPED-ADDRESS."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # dual-stack sockets report IPv4 peers as ::ffff:a.b.c.d
    family = 1 if isinstance(ip, ipaddress.IPv4Address) else 2
    mask = _COOKIE + txid
    xaddr = bytes(a ^ b for a, b in zip(ip.packed, mask[:len(ip.packed)], strict=True))
    value = bytes([0, family]) + ((port ^ (MAGIC_COOKIE >> 16)) & 0xFFFF).to_bytes(2, "big") + xaddr
    attr = _ATTR.pack(Attr.XOR_MAPPED_ADDRESS, len(value)) + value
    return _HDR.pack(MessageType.BINDING_SUCCESS, len(attr), _COOKIE, txid) + attr


def response_allowed(request_len: int, response_len: int) -> bool:
    """No amplification: a response at most 1.5x its request, or the 32-byte minimum IPv4 answer."""
    return response_len <= max(request_len * MAX_AMPLIFICATION, MIN_RESPONSE_ALLOWANCE)


def parse_response(data: bytes, txid: bytes | None = None) -> BindingResponse:
    """Parse a binding success response; XOR-MAPPED-ADDRESS preferred, MAPPED-ADDRESS accepted."""
    got_txid, attrs = _header(data, MessageType.BINDING_SUCCESS)
    if txid is not None and got_txid != txid:
        raise WrongTransactionError(f"STUN response for transaction {got_txid.hex()}, want {txid.hex()}")
    found: dict[int, bytes] = {}
    for atype, value, _ in attrs:
        found.setdefault(atype, value)
    for atype, xor in ((Attr.XOR_MAPPED_ADDRESS, True), (Attr.XOR_MAPPED_ADDRESS_OLD, True),
                       (Attr.MAPPED_ADDRESS, False)):
        if atype in found:
            ip, port = _xor_address(found[atype], got_txid, xor)
            return BindingResponse(got_txid, ip, port)
    raise MalformedAttrsError("no XOR-MAPPED-ADDRESS or MAPPED-ADDRESS in the response")
