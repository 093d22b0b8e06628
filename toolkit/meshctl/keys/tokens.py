"""Bearer tokens: auth keys (`mskey-auth-…`) and API keys (`mskey-api-…`).

A token is `mskey-<kind>-<id>-<secret>`: the 12-hex id is a public handle (for lists and lookups),
the secret carries 256 bits of entropy. Only the SHA-256 of the secret is stored; the plaintext is
shown once. A plain hash is enough because the secret is random, not a password. Comparison is
constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Literal

from .errors import KeyFormatError

__all__ = ["Token", "TokenKind", "generate_token", "hash_secret", "parse_token", "verify_secret"]

TokenKind = Literal["auth", "api", "derp"]
_RE = re.compile(r"^mskey-(auth|api|derp)-([0-9a-f]{12})-([0-9a-f]{64})$")


@dataclass(frozen=True, slots=True)
class Token:
    """A freshly generated token. `text` is the only copy of the secret: hand it out once."""

    kind: TokenKind
    id: str
    text: str
    secret_hash: str

    def __repr__(self) -> str:
        return f"Token(kind={self.kind!r}, id={self.id!r}, text=<redacted>)"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def generate_token(kind: TokenKind) -> Token:
    token_id = secrets.token_hex(6)
    secret = secrets.token_hex(32)
    return Token(kind, token_id, f"mskey-{kind}-{token_id}-{secret}", hash_secret(secret))


def parse_token(text: str, kind: TokenKind) -> tuple[str, str]:
    """Split a token into (id, secret); a malformed token or one of another kind is a KeyFormatError."""
    m = _RE.match(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise KeyFormatError(f"malformed {kind} key: want mskey-{kind}-<12 hex>-<64 hex>")
    if m.group(1) != kind:
        raise KeyFormatError(f"wrong kind of key: want an {kind} key (mskey-{kind}-…), got mskey-{m.group(1)}-…")
    return m.group(2), m.group(3)


def verify_secret(secret: str, secret_hash: str) -> bool:
    """Constant-time check of a presented secret against its stored hash."""
    return hmac.compare_digest(hash_secret(secret), secret_hash)
