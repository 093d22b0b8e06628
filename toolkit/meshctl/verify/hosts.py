"""Hosts to verify and how to reach them: inventory host data turned into an ssh_config and testinfra hosts.

The same connection settings as the deploy (pyinfra's `ssh_*` host data) are written into one private
ssh_config per run, so testinfra's `ssh://` backend (OpenSSH, strict host-key checking where the inventory
asks for it) and the operator's own `ssh -F` see the same hosts. SSH master connections are closed at the end.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import testinfra
from testinfra.host import Host

__all__ = ["HostSpec", "SshSession", "hosts_from_inventory"]

ROLE_GROUPS = {"control": "control", "derp": "derp", "nodes": "node"}


@dataclass(frozen=True, slots=True)
class HostSpec:
    """A host of the inventory: its name, role(s) and pyinfra host data."""

    name: str
    roles: tuple[str, ...]
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return str(self.data.get("ssh_hostname") or self.name)


def hosts_from_inventory(spec: Any, limit: list[str] | None = None) -> list[HostSpec]:
    """HostSpecs from a checked inventory (`meshctl.deploy.inventory.InventorySpec`), optionally limited."""
    out = []
    for name in spec.hosts:
        if limit and name not in limit:
            continue
        groups = spec.groups_of(name)
        roles = tuple(ROLE_GROUPS[g] for g in ROLE_GROUPS if g in groups)
        out.append(HostSpec(name, roles, dict(spec.data(name))))
    return out


def _ssh_block(alias: str, spec: HostSpec, control_dir: Path) -> str:
    d = spec.data
    lines = [f"Host {alias}", f"  HostName {spec.address}", f"  Port {int(d.get('ssh_port', 22))}",
             f"  User {d.get('ssh_user', 'root')}", "  BatchMode yes", "  LogLevel ERROR",
             "  ConnectTimeout 10", "  ControlMaster auto", f"  ControlPath {control_dir}/%C",
             "  ControlPersist 120s"]
    if d.get("ssh_key"):
        lines += [f"  IdentityFile {d['ssh_key']}", "  IdentitiesOnly yes"]
    if d.get("ssh_known_hosts_file"):
        lines.append(f"  UserKnownHostsFile {d['ssh_known_hosts_file']}")
    strict = d.get("ssh_strict_host_key_checking", "accept-new")
    lines.append(f"  StrictHostKeyChecking {strict}")
    return "\n".join(lines) + "\n"


class SshSession:
    """One verification run's SSH settings; use as a context manager so master connections are closed."""

    def __init__(self, specs: list[HostSpec]) -> None:
        self.specs = {s.name: s for s in specs}
        self._dir = Path(tempfile.mkdtemp(prefix="meshctl-verify-"))
        (self._dir / "cm").mkdir(mode=0o700)
        self.config = self._dir / "ssh_config"
        self.config.write_text("".join(_ssh_block(s.name, s, self._dir / "cm") for s in specs))
        self._hosts: dict[str, Host] = {}

    def host(self, name: str) -> Host:
        """A testinfra Host for `name` over OpenSSH with this run's ssh_config."""
        if name not in self._hosts:
            # controlpersist=0: the ssh_config above already sets ControlMaster/ControlPath/ControlPersist.
            self._hosts[name] = testinfra.get_host(f"ssh://{name}?ssh_config={self.config}&controlpersist=0")
        return self._hosts[name]

    def ssh_argv(self, name: str) -> list[str]:
        return ["ssh", "-F", str(self.config), name]

    def close(self) -> None:
        for name in self.specs:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(["ssh", "-F", str(self.config), "-O", "exit", name], capture_output=True, timeout=5)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> SshSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[HostSpec]:
        return iter(self.specs.values())
