"""Errors of the key model: bad text forms, wrong kinds, unsafe or unreadable key files."""

from __future__ import annotations

from ..errors import MeshctlError

__all__ = ["KeyFileError", "KeyFileModeError", "KeyFormatError", "KeyTypeMismatchError", "KeysError"]


class KeysError(MeshctlError):
    """Something is wrong with a key, a token or a key file."""


class KeyFormatError(KeysError, ValueError):
    """A key's text or bytes are malformed (length, hex, base64)."""


class KeyTypeMismatchError(KeysError, ValueError):
    """A key of one kind was given where another kind was expected (wrong prefix)."""


class KeyFileError(KeysError):
    """A key file cannot be read or written."""


class KeyFileModeError(KeyFileError):
    """A key file is readable by group or others; it is refused until its mode is fixed."""

    def __init__(self, path: str, mode: int) -> None:
        super().__init__(
            f"{path} is readable by group or others (mode {mode:04o}), refusing to use it",
            hint=f"fix it with: chmod 600 {path}",
        )
        self.path = path
        self.mode = mode
