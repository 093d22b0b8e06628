"""Typed Curve25519 keys: one public and one private class per kind, with prefixed hex text forms.

Rules (tailscale's types/key): a private key's repr is redacted; equality is constant-time and only
between keys of the same class; keys cannot be pickled; the secret leaves a private key only through
the explicit, greppable `to_text()`, `to_wireguard_base64()` and `secret_bytes()`. Logs use `short()`.
"""

from __future__ import annotations

import hmac
from typing import Any, ClassVar, Self

import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.utils

from .errors import KeyFormatError, KeyTypeMismatchError
from .wireguard import KEY_LEN, from_wireguard_base64, to_wireguard_base64

__all__ = ["KEY_LEN", "PrivateKey", "PublicKey", "fingerprint"]


def fingerprint(raw: bytes) -> str:
    """The short public fingerprint used in logs: the first 5 characters of the WireGuard base64 form."""
    return "[" + to_wireguard_base64(raw)[:5] + "]"


def _parse_hex(text: str, prefix: str, kind: str) -> bytes:
    if not isinstance(text, str):
        raise KeyFormatError(f"{kind}: want text starting with {prefix!r}, got {type(text).__name__}")
    text = text.strip()
    if not text.startswith(prefix):
        # Name what was found without echoing it: text without a known prefix may be a secret
        # (e.g. a `wg genkey` key pasted into a key file), so only its prefix or its shape is shown.
        head = text.split(":", 1)[0]
        if ":" in text and len(head) <= 16 and head.isalpha():
            raise KeyTypeMismatchError(f"{kind}: expected {prefix!r} prefix, got {head + ':'!r}")
        shape = "empty text" if not text else f"{len(text)} characters without a key prefix"
        raise KeyTypeMismatchError(f"{kind}: expected {prefix!r} prefix, got {shape}")
    body = text[len(prefix):]
    if len(body) != 2 * KEY_LEN:
        raise KeyFormatError(f"{kind}: want {2 * KEY_LEN} hex characters after {prefix!r}, got {len(body)}")
    try:
        return bytes.fromhex(body)
    except ValueError:
        raise KeyFormatError(f"{kind}: {prefix!r} must be followed by hex digits (0-9a-f)") from None


def _check_raw(raw: bytes, kind: str) -> bytes:
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise KeyFormatError(f"{kind}: want {KEY_LEN} bytes, got {type(raw).__name__}")
    raw = bytes(raw)
    if len(raw) != KEY_LEN:
        raise KeyFormatError(f"{kind}: want {KEY_LEN} bytes, got {len(raw)}")
    return raw


class _Key:
    """What every key class shares: immutability, no pickling, identity copies, and the raw/base64 constructors."""

    KIND: ClassVar[str] = "key"
    __slots__ = ()

    def __init__(self, raw: bytes) -> None:
        raise NotImplementedError

    @classmethod
    def from_raw(cls, raw: bytes) -> Self:
        return cls(raw)

    @classmethod
    def from_wireguard_base64(cls, text: str) -> Self:
        return cls(from_wireguard_base64(text))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __reduce__(self) -> Any:
        raise TypeError(f"{type(self).__name__} cannot be pickled; use to_text()")

    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        return self


class PublicKey(_Key):
    """A Curve25519 public key of one kind. Subclasses set PREFIX and KIND."""

    PREFIX: ClassVar[str] = ""
    KIND: ClassVar[str] = "public key"
    __slots__ = ("_raw",)
    _raw: bytes

    def __init__(self, raw: bytes) -> None:
        object.__setattr__(self, "_raw", _check_raw(raw, self.KIND))

    @classmethod
    def from_text(cls, text: str) -> Self:
        """Parse the prefixed hex form (e.g. `nodekey:<64 hex>`); a wrong prefix is a KeyTypeMismatchError."""
        return cls(_parse_hex(text, cls.PREFIX, cls.KIND))

    @property
    def raw(self) -> bytes:
        return self._raw

    def __bytes__(self) -> bytes:
        return self._raw

    def to_text(self) -> str:
        return self.PREFIX + self._raw.hex()

    def to_wireguard_base64(self) -> str:
        return to_wireguard_base64(self._raw)

    def short(self) -> str:
        return fingerprint(self._raw)

    def is_zero(self) -> bool:
        return not any(self._raw)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_text()})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, PublicKey)
        return hmac.compare_digest(self._raw, other._raw)

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._raw))


class PrivateKey(_Key):
    """A Curve25519 private key of one kind. Subclasses set PREFIX, KIND and PUBLIC."""

    PREFIX: ClassVar[str] = ""
    KIND: ClassVar[str] = "private key"
    PUBLIC: ClassVar[type[PublicKey]] = PublicKey
    __slots__ = ("_pub", "_raw")
    _raw: bytes
    _pub: bytes

    def __init__(self, raw: bytes) -> None:
        raw = _check_raw(raw, self.KIND)
        object.__setattr__(self, "_raw", raw)
        object.__setattr__(self, "_pub", nacl.bindings.crypto_scalarmult_base(raw))

    @classmethod
    def generate(cls) -> Self:
        """A fresh key from the operating system's CSPRNG."""
        return cls(bytes(nacl.public.PrivateKey.generate()))

    @classmethod
    def from_text(cls, text: str) -> Self:
        return cls(_parse_hex(text, cls.PREFIX, cls.KIND))

    def public_key(self) -> PublicKey:
        """The matching public key (of the kind's public class). Subclasses narrow the return type."""
        return self.PUBLIC(self._pub)

    def secret_bytes(self) -> bytes:
        """The 32 secret bytes. Explicit on purpose: grep for it when auditing where secrets go."""
        return self._raw

    def to_text(self) -> str:
        """The prefixed hex form, for the key file only."""
        return self.PREFIX + self._raw.hex()

    def to_wireguard_base64(self) -> str:
        """WireGuard's base64 form, for handing to `wg` only."""
        return to_wireguard_base64(self._raw)

    def short(self) -> str:
        return fingerprint(self._pub)

    def box(self, peer: PublicKey) -> Box:
        """A NaCl box between this key and a peer's public key (precomputed; reuse it)."""
        return Box(self._raw, peer.raw)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<redacted>, public={self.short()})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, PrivateKey)
        return hmac.compare_digest(self._raw, other._raw)

    __hash__ = None  # type: ignore[assignment]


class Box:
    """NaCl crypto_box (Curve25519 + XSalsa20-Poly1305) between two keys; sealed form is nonce ‖ ciphertext."""

    NONCE_LEN = 24
    OVERHEAD = 16
    __slots__ = ("_box",)

    def __init__(self, private_raw: bytes, public_raw: bytes) -> None:
        self._box = nacl.public.Box(nacl.public.PrivateKey(private_raw), nacl.public.PublicKey(public_raw))

    def seal(self, plaintext: bytes, nonce: bytes | None = None) -> bytes:
        if nonce is None:
            nonce = nacl.utils.random(self.NONCE_LEN)
        return bytes(self._box.encrypt(plaintext, nonce))

    def open(self, sealed: bytes) -> bytes:
        """Open nonce ‖ ciphertext; raises BoxOpenError when it was not sealed between these two keys."""
        if len(sealed) < self.NONCE_LEN + self.OVERHEAD:
            raise BoxOpenError(f"sealed box too short: {len(sealed)} bytes, want at least "
                               f"{self.NONCE_LEN + self.OVERHEAD}")
        try:
            return bytes(self._box.decrypt(sealed[self.NONCE_LEN:], sealed[:self.NONCE_LEN]))
        except nacl.exceptions.CryptoError:
            raise BoxOpenError("box failed to open: not sealed between these keys, or corrupted") from None

    def __repr__(self) -> str:
        return "Box(<redacted>)"

    def __reduce__(self) -> Any:
        raise TypeError("Box cannot be pickled")


class BoxOpenError(KeyFormatError):
    """A NaCl box did not open (wrong keys, tampering, or truncation)."""
