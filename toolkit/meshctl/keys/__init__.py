"""Typed mesh keys, key files and bearer tokens (DESIGN §2). Private halves never leave their host."""

from __future__ import annotations

from .base import KEY_LEN, Box, BoxOpenError, PrivateKey, PublicKey, fingerprint
from .errors import KeyFileError, KeyFileModeError, KeyFormatError, KeysError, KeyTypeMismatchError
from .keyfile import (
    check_private_mode,
    detect_private_key,
    ensure_private_dir,
    load_or_create_private_key,
    load_private_key,
    read_secret_file,
    write_private_key,
    write_secret_file,
)
from .kinds import (
    PRIVATE_KINDS,
    ControlPrivateKey,
    ControlPublicKey,
    DerpPrivateKey,
    DerpPublicKey,
    DiscoPrivateKey,
    DiscoPublicKey,
    MachinePrivateKey,
    MachinePublicKey,
    NodePrivateKey,
    NodePublicKey,
)
from .tokens import Token, generate_token, hash_secret, parse_token, verify_secret
from .wireguard import from_wireguard_base64, to_wireguard_base64

__all__ = [
    "KEY_LEN",
    "PRIVATE_KINDS",
    "Box",
    "BoxOpenError",
    "ControlPrivateKey",
    "ControlPublicKey",
    "DerpPrivateKey",
    "DerpPublicKey",
    "DiscoPrivateKey",
    "DiscoPublicKey",
    "KeyFileError",
    "KeyFileModeError",
    "KeyFormatError",
    "KeyTypeMismatchError",
    "KeysError",
    "MachinePrivateKey",
    "MachinePublicKey",
    "NodePrivateKey",
    "NodePublicKey",
    "PrivateKey",
    "PublicKey",
    "Token",
    "check_private_mode",
    "detect_private_key",
    "ensure_private_dir",
    "fingerprint",
    "from_wireguard_base64",
    "generate_token",
    "hash_secret",
    "load_or_create_private_key",
    "load_private_key",
    "parse_token",
    "read_secret_file",
    "to_wireguard_base64",
    "verify_secret",
    "write_private_key",
    "write_secret_file",
]
