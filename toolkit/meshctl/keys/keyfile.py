"""Key and secret files: the only place meshctl writes or reads private key material on disk.

Files are written atomically (temporary file in the same directory, fsync, rename) with mode 0600;
missing parent directories are created 0700. Loading refuses a file readable by group or others.
The DERP server key file uses derper's JSON shape `{"PrivateKey": "privkey:<hex>"}`.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import TypeVar

from .base import PrivateKey
from .errors import KeyFileError, KeyFileModeError, KeyFormatError, KeyTypeMismatchError
from .kinds import PRIVATE_KINDS, DerpPrivateKey

__all__ = [
    "check_private_mode",
    "detect_private_key",
    "ensure_private_dir",
    "load_or_create_private_key",
    "load_private_key",
    "read_secret_file",
    "write_private_key",
    "write_secret_file",
]

K = TypeVar("K", bound=PrivateKey)


def ensure_private_dir(path: Path) -> None:
    """Create `path` (and parents) with mode 0700 where missing; existing directories are left alone."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            continue
        except OSError as e:
            raise KeyFileError(f"cannot create directory {d}: {e.strerror}") from None
        os.chmod(d, 0o700)


def write_secret_file(path: Path, data: bytes) -> None:
    """Atomically write `data` to `path` with mode 0600 (a crash leaves the old file or the new one)."""
    path = Path(path)
    ensure_private_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as e:
        raise KeyFileError(f"cannot write {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:  # mkstemp already made it 0600; fchmod guards an odd umask/ACL
            os.fchmod(f.fileno(), 0o600)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # ENOSPC and friends: the old file stays as it was
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise KeyFileError(f"cannot write {path}: {e.strerror}") from None
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def check_private_mode(path: Path) -> os.stat_result:
    """Refuse a secret file that group or others may read or write; return its stat."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise KeyFileError(f"{path} does not exist") from None
    except OSError as e:
        raise KeyFileError(f"cannot read {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"{path} is not a regular file")
    if st.st_mode & 0o077:
        raise KeyFileModeError(str(path), stat.S_IMODE(st.st_mode))
    return st


def read_secret_file(path: Path) -> bytes:
    """Read a secret file after checking its mode (0600 or stricter)."""
    check_private_mode(path)
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise KeyFileError(f"cannot read {path}: {e.strerror}") from None


def _encode(key: PrivateKey) -> bytes:
    if isinstance(key, DerpPrivateKey):
        return (json.dumps({"PrivateKey": key.to_text()}) + "\n").encode()
    return (key.to_text() + "\n").encode()


def _decode_text(path: Path, data: bytes) -> str:
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise KeyFormatError(f"{path}: not a key file (not UTF-8 text)") from None
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            raise KeyFormatError(f"{path}: malformed JSON key file") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("PrivateKey"), str):
            raise KeyFormatError(f'{path}: JSON key file must be {{"PrivateKey": "privkey:<hex>"}}')
        return str(obj["PrivateKey"])
    return text


def write_private_key(path: Path, key: PrivateKey) -> None:
    """Write a private key file (0600, atomic). DERP keys use derper's JSON shape."""
    write_secret_file(Path(path), _encode(key))


def load_private_key(path: Path, cls: type[K]) -> K:
    """Load a private key of kind `cls`; refuses an unsafe mode, a wrong kind or malformed text."""
    data = read_secret_file(Path(path))
    text = _decode_text(Path(path), data)
    is_json = data.lstrip().startswith(b"{")
    if is_json and cls is not DerpPrivateKey:
        raise KeyTypeMismatchError(f"{path}: holds a DERP server key (JSON), want a {cls.KIND}")
    try:
        return cls.from_text(text)
    except (KeyFormatError, KeyTypeMismatchError) as e:
        raise type(e)(f"{path}: {e}") from None


def detect_private_key(path: Path) -> tuple[str, PrivateKey]:
    """Load a private key file of any kind; returns (kind name, key)."""
    data = read_secret_file(Path(path))
    text = _decode_text(Path(path), data)
    if data.lstrip().startswith(b"{"):
        return "derp", DerpPrivateKey.from_text(text)
    for name, cls in PRIVATE_KINDS.items():
        if name == "derp":
            continue
        if text.startswith(cls.PREFIX):
            try:
                return name, cls.from_text(text)
            except (KeyFormatError, KeyTypeMismatchError) as e:
                raise type(e)(f"{path}: {e}") from None
    prefixes = ", ".join(repr(c.PREFIX) for c in PRIVATE_KINDS.values())
    raise KeyTypeMismatchError(f"{path}: not a meshctl private key file (want one of {prefixes})")


def load_or_create_private_key(path: Path, cls: type[K]) -> tuple[K, bool]:
    """Load the key at `path`, or generate and write one if the file does not exist. Returns (key, created)."""
    path = Path(path)
    if path.exists():
        return load_private_key(path, cls), False
    key = cls.generate()
    write_private_key(path, key)
    return key, True
