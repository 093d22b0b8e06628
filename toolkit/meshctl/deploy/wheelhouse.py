"""The wheelhouse: meshctl and all its dependencies as wheels, built on the operator machine, one tar per key.

Hosts install from it with `pip --no-index`, so they never need a package index. The key is the version
plus a hash of the sources (a checkout changes without a version bump); installed from a wheel, the key is
the version and meshctl's own wheel is fetched with `pip download`. Tars are cached under
`$XDG_CACHE_HOME/meshctl/wheelhouse/<key>.tar`; older keys are pruned. `$MESHCTL_WHEELHOUSE` names a
prebuilt tar instead (its file name without `.tar` is the key): for air-gapped operators, and for tests that
must not see a changing checkout.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from .errors import WheelhouseError

__all__ = ["Wheelhouse", "build_wheelhouse", "checkout_root", "default_cache_dir", "source_key"]

KEEP = 3  # wheelhouse tars kept in the cache


@dataclass(frozen=True)
class Wheelhouse:
    key: str
    tar: Path
    built: bool  # False when it came from the cache


def default_cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "meshctl" / "wheelhouse"


def checkout_root() -> Path | None:
    """The repository checkout meshctl runs from (editable install), or None when installed from a wheel."""
    root = Path(__file__).resolve().parents[3]
    if (root / "pyproject.toml").is_file() and (root / "toolkit" / "meshctl").is_dir():
        return root
    return None


def source_key(root: Path | None) -> str:
    """`<version>` for an installed wheel; `<version>-<12 hex of the sources' hash>` for a checkout."""
    if root is None:
        return __version__
    digest = hashlib.sha256()
    files = [root / "pyproject.toml", *sorted((root / "toolkit").rglob("*.py")), *sorted((root / "roles").rglob("*")),
             *sorted((root / "inventories").glob("*.py"))]
    for f in files:
        if f.is_file() and "__pycache__" not in f.parts:
            digest.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return f"{__version__}-{digest.hexdigest()[:12]}"


def _pip(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise WheelhouseError(f"pip {args[0]} failed: {last}",
                              hint="the operator machine needs a package index (or a pip cache) to build it")


def build_wheelhouse(cache_dir: Path | None = None, root: Path | None = None) -> Wheelhouse:
    """The wheelhouse tar for the running meshctl, built once per key (or the one `$MESHCTL_WHEELHOUSE` names)."""
    pinned = os.environ.get("MESHCTL_WHEELHOUSE")
    if pinned:
        path = Path(pinned)
        if not path.is_file() or path.suffix != ".tar":
            raise WheelhouseError(f"MESHCTL_WHEELHOUSE={pinned} is not a wheelhouse .tar file")
        return Wheelhouse(key=path.stem, tar=path, built=False)
    cache_dir = cache_dir or default_cache_dir()
    root = root if root is not None else checkout_root()
    key = source_key(root)
    tar_path = cache_dir / f"{key}.tar"
    if tar_path.is_file():
        return Wheelhouse(key=key, tar=tar_path, built=False)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".build-") as tmp:
        out = Path(tmp) / "wheels"
        if root is not None:
            _pip(["wheel", "-q", "--no-deps", "-w", str(out), str(root)])
        else:
            _pip(["download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(out), f"meshctl=={__version__}"])
        wheels = sorted(out.glob("meshctl-*.whl"))
        if len(wheels) != 1:
            raise WheelhouseError(f"expected one meshctl wheel in {out}, found {len(wheels)}")
        _pip(["wheel", "-q", "-w", str(out), "--find-links", str(out), str(wheels[0])])
        partial = Path(tmp) / "wheelhouse.tar"
        with tarfile.open(partial, "w") as tar:
            for wheel in sorted(out.glob("*.whl")):
                tar.add(wheel, arcname=wheel.name)
        partial.replace(tar_path)  # atomic: a concurrent deploy sees the whole tar or none
    for old in sorted(cache_dir.glob("*.tar"), key=lambda p: p.stat().st_mtime, reverse=True)[KEEP:]:
        old.unlink(missing_ok=True)
    return Wheelhouse(key=key, tar=tar_path, built=True)
