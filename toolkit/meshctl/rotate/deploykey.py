"""Deploy-key rotation: add the new key everywhere → verify a login with it everywhere → switch → remove the old.

    KEY          the deploy key in use (the workspace's `secrets/deploy_ed25519`, or the inventory's ssh_key)
    KEY.new      the new pair, made on this machine (0600) before any host is touched
    KEY.old      the previous pair, kept from the switch until the old key is gone from every host

1. preflight: log in with KEY on every host (nothing is changed if one fails);
2. add KEY.new's public line to `authorized_keys` on every host (atomic edit, mode and owner kept);
3. log in with KEY.new alone (`IdentitiesOnly`, no agent) on every host;
4. if any host failed 2 or 3: remove the new line again where it was added, delete KEY.new, and stop
   naming the hosts — the old key was never touched, so the operator cannot be locked out;
5. switch: KEY → KEY.old, KEY.new → KEY (a re-run after a crash from here on resumes at step 6);
6. remove the old key's lines everywhere, logging in with the new key; delete KEY.old when all are done.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from ..keys import read_secret_file
from ..workspace import generate_ssh_keypair
from .authkeys import edit_script, key_blob
from .errors import RotateError, RotationAbortedError
from .sshexec import CommandResult, Runner, SshTarget

__all__ = ["DeployKeyResult", "Progress", "created_comment", "public_line_of", "rotate_deploy_key"]

#: progress callback: (host, step, outcome)
Progress = Callable[[str, str, str], None]


@dataclass(frozen=True)
class DeployKeyResult:
    key_path: str
    old_public: str
    new_public: str
    hosts: tuple[str, ...]
    old_key_left_on: dict[str, str] = field(default_factory=dict)  # host -> why the old key is still there
    resumed: bool = False
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        return not self.old_key_left_on


def created_comment(name: str, now: float) -> str:
    """Key comment carrying the creation time, read back by `meshctl keys audit`."""
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"meshctl-deploy@{name}:created={stamp}"


def public_line_of(private_path: Path) -> str:
    """The OpenSSH public line (type and blob) of an OpenSSH private key file (mode-checked)."""
    try:
        key = serialization.load_ssh_private_key(read_secret_file(private_path), password=None)
    except (ValueError, TypeError) as e:
        raise RotateError(f"{private_path}: not an unencrypted OpenSSH private key: {e}") from None
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode()


def _sib(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _move_pair(src: Path, dst: Path) -> None:
    os.replace(src, dst)
    if _sib(src, ".pub").exists():
        os.replace(_sib(src, ".pub"), _sib(dst, ".pub"))


def _remove_pair(path: Path) -> None:
    for p in (path, _sib(path, ".pub")):
        p.unlink(missing_ok=True)


class _Fleet:
    def __init__(self, targets: Sequence[SshTarget], runner: Runner, progress: Progress | None, workers: int):
        self.targets = list(targets)
        self.runner = runner
        self.progress = progress
        self.workers = max(1, min(workers, len(self.targets) or 1))

    def each(self, step: str, key: Path, command: Callable[[SshTarget], str],
             ok: Callable[[CommandResult], bool] = lambda r: r.rc == 0,
             only: Sequence[str] | None = None) -> tuple[dict[str, CommandResult], dict[str, str]]:
        """Run on every target (in parallel); returns (results of successes, failures host -> detail)."""
        chosen = [t for t in self.targets if only is None or t.name in only]

        def one(t: SshTarget) -> tuple[str, CommandResult]:
            return t.name, self.runner.run(t, key, command(t))

        done: dict[str, CommandResult] = {}
        failed: dict[str, str] = {}
        with ThreadPoolExecutor(self.workers) as pool:
            for name, res in pool.map(one, chosen):
                if ok(res):
                    done[name] = res
                    self._say(name, step, res.stdout.strip().splitlines()[-1] if res.stdout.strip() else "ok")
                else:
                    failed[name] = res.detail
                    self._say(name, step, f"FAILED: {res.detail}")
        return done, failed

    def _say(self, host: str, step: str, outcome: str) -> None:
        if self.progress is not None:
            self.progress(host, step, outcome)


def rotate_deploy_key(targets: Sequence[SshTarget], key_path: Path, *, runner: Runner, comment: str,
                      progress: Progress | None = None, workers: int = 8) -> DeployKeyResult:
    """Rotate the deploy key at `key_path` on `targets` (see the module docstring for the steps)."""
    if not targets:
        raise RotateError("no hosts to rotate the deploy key on")
    start = time.monotonic()
    key_path = Path(key_path)
    new_path, old_path = _sib(key_path, ".new"), _sib(key_path, ".old")
    fleet = _Fleet(targets, runner, progress, workers)
    names = tuple(t.name for t in targets)

    if old_path.exists():  # a previous run switched the workspace but did not finish removing the old key
        old_public, new_public = public_line_of(old_path), public_line_of(key_path)
        left = _remove_old(fleet, key_path, old_path, old_public)
        return DeployKeyResult(str(key_path), old_public, new_public, names, left, True,
                               time.monotonic() - start)

    old_public = public_line_of(key_path)
    _, failed = fleet.each("login with current key", key_path, lambda t: "true")
    if failed:
        raise RotationAbortedError("deploy-key rotation (preflight)", failed,
                                   hint="the current key must log in everywhere first; nothing was changed")

    if new_path.exists():  # left by an aborted run that cleaned up its hosts, or a crash: reuse it
        new_public = public_line_of(new_path)
    else:
        new_public = " ".join(generate_ssh_keypair(new_path, comment).split()[:2])
    if key_blob(new_public) == key_blob(old_public):
        raise RotateError(f"{new_path} holds the same key as {key_path}; delete {new_path} and re-run")

    added, add_failed = fleet.each("add new key", key_path,
                                   lambda t: edit_script(t.authorized_keys, add=_with_comment(new_path, new_public)))
    verify_ok, verify_failed = fleet.each("login with new key", new_path, lambda t: "true",
                                          only=list(added))
    failed = {**add_failed, **{h: f"login with the new key refused: {d}" for h, d in verify_failed.items()}}
    if failed:
        # roll back: take the new line out again where we put it, with the old key that still works
        _, rb_failed = fleet.each("roll back new key", key_path,
                                  lambda t: edit_script(t.authorized_keys, remove=new_public), only=list(added))
        if not rb_failed:
            _remove_pair(new_path)
        hint = "the old key is still authorized on every host"
        if rb_failed:
            hint += "; the unused new key line could not be removed on " + ", ".join(sorted(rb_failed))
        raise RotationAbortedError("deploy-key rotation", failed, hint=hint)
    assert set(verify_ok) == set(names)

    _move_pair(key_path, old_path)
    _move_pair(new_path, key_path)
    left = _remove_old(fleet, key_path, old_path, old_public)
    return DeployKeyResult(str(key_path), old_public, new_public, names, left, False, time.monotonic() - start)


def _with_comment(path: Path, public: str) -> str:
    pub = _sib(path, ".pub")
    if pub.exists():
        line = pub.read_text().strip()
        if line.split()[:2] == public.split()[:2]:
            return line
    return public


def _remove_old(fleet: _Fleet, key_path: Path, old_path: Path, old_public: str) -> dict[str, str]:
    _, failed = fleet.each("remove old key", key_path, lambda t: edit_script(t.authorized_keys, remove=old_public))
    if not failed:
        _remove_pair(old_path)
    return failed

