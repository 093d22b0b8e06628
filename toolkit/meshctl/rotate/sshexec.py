"""Running commands on inventory hosts with OpenSSH, with exactly the key we name.

Rotation must know which key authenticated a login, so every connection passes one `-i KEY` with
`IdentitiesOnly=yes`, no agent and no certificate files; a login that works therefore proves that key.
`SshTarget`s come from an inventory (`targets_from_inventory`), using the pyinfra connector keys
(`ssh_hostname`, `ssh_port`, `ssh_user`, `ssh_known_hosts_file`, `ssh_strict_host_key_checking`).
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .errors import RotateError

__all__ = [
    "AUTHORIZED_KEYS_DATA_KEY",
    "CommandResult",
    "Runner",
    "SshRunner",
    "SshTarget",
    "targets_from_inventory",
]

#: optional host data: where the login user's authorized_keys lives when sshd uses a non-default path
AUTHORIZED_KEYS_DATA_KEY = "authorized_keys_file"


@dataclass(frozen=True, slots=True)
class SshTarget:
    """How to reach one host (the key is chosen per call)."""

    name: str
    hostname: str
    port: int = 22
    user: str = "root"
    known_hosts: str | None = None
    strict_host_keys: str = "yes"
    authorized_keys: str = "~/.ssh/authorized_keys"
    inventory_key: str | None = None  # `ssh_key` from the inventory, if any


@dataclass(frozen=True, slots=True)
class CommandResult:
    rc: int
    stdout: str
    stderr: str

    @property
    def detail(self) -> str:
        lines = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return lines[-1] if lines else f"exit code {self.rc}"


class Runner(Protocol):
    """Runs a shell command on a target, authenticating with `key` only."""

    def run(self, target: SshTarget, key: Path, command: str, *, timeout: float = 60.0,
            input: str | None = None) -> CommandResult: ...


class SshRunner:
    """The real runner: the `ssh` client in a subprocess."""

    def __init__(self, connect_timeout: int = 10) -> None:
        self.connect_timeout = connect_timeout

    def argv(self, target: SshTarget, key: Path, command: str) -> list[str]:
        opts = [
            "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "CertificateFile=none",
            "-o", "BatchMode=yes", "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no",
            "-o", f"ConnectTimeout={self.connect_timeout}", "-o", "LogLevel=ERROR", "-o", "ForwardAgent=no",
            "-o", "ControlMaster=no", "-o", "ControlPath=none",
            "-o", f"StrictHostKeyChecking={target.strict_host_keys}",
        ]  # fmt: skip
        if target.known_hosts:
            opts += ["-o", f"UserKnownHostsFile={target.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
        return ["ssh", *opts, "-p", str(target.port), f"{target.user}@{target.hostname}", "--", command]

    def run(self, target: SshTarget, key: Path, command: str, *, timeout: float = 60.0,
            input: str | None = None) -> CommandResult:
        """Run `command`; `input` (e.g. a secret) goes to its stdin, never onto a command line."""
        try:
            proc = subprocess.run(self.argv(target, key, command), capture_output=True, text=True,
                                  timeout=timeout, input=input, check=False,
                                  stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return CommandResult(255, "", f"timed out after {timeout:.0f}s")
        except FileNotFoundError:
            raise RotateError("the OpenSSH client `ssh` is not installed",
                              hint="install it: apt-get install openssh-client") from None
        return CommandResult(proc.returncode, proc.stdout, proc.stderr)


def _strict(value: Any) -> str:
    if value is None or value is True:
        return "yes"
    if value is False:
        return "no"
    return str(value)


def targets_from_inventory(path: Path, limit: Sequence[str] | None = None, group: str | None = None,
                           where: Mapping[str, Any] | None = None) -> list[SshTarget]:
    """The hosts of an inventory (checked by the deploy engine's loader), optionally only those of `group`,
    limited by host or group names, and whose data has the values in `where`."""
    from ..deploy.inventory import load_inventory

    spec = load_inventory(path, allowed_keys={AUTHORIZED_KEYS_DATA_KEY})
    names = list(spec.hosts) if group is None else list(spec.group(group))
    if limit:
        wanted: list[str] = []
        for item in limit:
            members = spec.group(item) if item in spec.groups else ((item,) if item in names else ())
            if not members:
                raise RotateError(f"--limit {item!r} names no host or group of {path}",
                                  hint="hosts: " + ", ".join(names))
            wanted.extend(m for m in members if m not in wanted)
        names = [n for n in names if n in wanted]
    out = []
    for name in names:
        d = spec.data(name)
        if where and any(d.get(k) != v for k, v in where.items()):
            continue
        out.append(SshTarget(
            name=name, hostname=str(d.get("ssh_hostname", name)), port=int(d.get("ssh_port", 22)),
            user=str(d.get("ssh_user", "root")),
            known_hosts=str(d["ssh_known_hosts_file"]) if d.get("ssh_known_hosts_file") else None,
            strict_host_keys=_strict(d.get("ssh_strict_host_key_checking")),
            authorized_keys=str(d.get(AUTHORIZED_KEYS_DATA_KEY, "~/.ssh/authorized_keys")),
            inventory_key=str(d["ssh_key"]) if d.get("ssh_key") else None,
        ))  # fmt: skip
    return out


def quote_path(path: str) -> str:
    """A remote path for the shell, keeping a leading `~/` expandable."""
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def shared_inventory_key(targets: Iterable[SshTarget]) -> str | None:
    """The `ssh_key` every target names, if they all name the same one."""
    keys = {t.inventory_key for t in targets}
    if len(keys) == 1:
        return keys.pop()
    return None
