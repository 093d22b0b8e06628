"""WireGuard's base64 text form of 32-byte Curve25519 keys: the one place meshctl converts to and from it."""

from __future__ import annotations

import base64
import binascii

from .errors import KeyFormatError

__all__ = ["from_wireguard_base64", "to_wireguard_base64"]

KEY_LEN = 32


def to_wireguard_base64(raw: bytes) -> str:
    """Encode 32 raw key bytes as WireGuard does (44 characters of standard base64)."""
    if len(raw) != KEY_LEN:
        raise KeyFormatError(f"WireGuard key: want {KEY_LEN} bytes, got {len(raw)}")
    return base64.b64encode(raw).decode("ascii")


def from_wireguard_base64(text: str) -> bytes:
    """Decode WireGuard's base64 form (as printed by `wg genkey` / `wg pubkey`) to 32 raw bytes."""
    text = text.strip()
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KeyFormatError(f"WireGuard key: want 44 characters of base64, got {len(text)} characters "
                             "that are not valid base64") from None
    if len(raw) != KEY_LEN:
        raise KeyFormatError(f"WireGuard key: want {KEY_LEN} bytes, got {len(raw)}")
    return raw
