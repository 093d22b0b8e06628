"""A lab's state file (`/var/lib/meshctl/lab/<name>/state.json`) and the typed view other parts import.

`load_state(name)` → `LabState`; `LabState.ssh_command(host, cmd)` is the argv that runs `cmd` on a host
over SSH with the lab's key and strict host key checking; `LabState.run(host, cmd)` runs it.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import LabError, LabHostError, LabNotRunningError
from .plan import Nat, Role

__all__ = ["LAB_ROOT", "LabHost", "LabState", "lab_dir", "load_state", "save_state", "state_path"]

LAB_ROOT = Path("/var/lib/meshctl/lab")
STATE_VERSION = 1


def lab_dir(name: str, root: Path = LAB_ROOT) -> Path:
    return root / name


def state_path(name: str, root: Path = LAB_ROOT) -> Path:
    return lab_dir(name, root) / "state.json"


@dataclass(frozen=True)
class LabHost:
    """One running host, as recorded by `lab up`."""

    name: str
    role: Role
    address: str  # on its own network
    public_address: str  # as seen on the lab internet (the router's address for NATed nodes)
    ssh_hostname: str
    ssh_port: int
    nat: Nat
    pid: int  # the systemd-nspawn process
    pid_start: int  # its start time in clock ticks (/proc/PID/stat field 22): guards against PID reuse
    machine_id: str
    netns: str
    router_netns: str | None
    root_dir: str  # the merged overlay the host boots from
    cgroups: tuple[str, ...] = ()  # the host's own cgroup in each hierarchy (see cgroup.py)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabHost:
        return cls(
            name=data["name"], role=Role(data["role"]), address=data["address"],
            public_address=data["public_address"], ssh_hostname=data["ssh_hostname"], ssh_port=int(data["ssh_port"]),
            nat=Nat(data["nat"]), pid=int(data["pid"]), pid_start=int(data["pid_start"]),
            machine_id=data["machine_id"], netns=data["netns"], router_netns=data.get("router_netns"),
            root_dir=data["root_dir"], cgroups=tuple(data.get("cgroups", ())),
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["role"] = self.role.value
        data["nat"] = self.nat.value
        data["cgroups"] = list(self.cgroups)
        return data


@dataclass(frozen=True)
class LabState:
    """A lab brought up by `meshctl lab up`."""

    name: str
    prefix: str  # "10.a.b": the lab internet is prefix.0/24
    ssh_key: str  # the lab's private key (0600); the public half is ssh_key + ".pub"
    known_hosts: str  # host keys of every host, for StrictHostKeyChecking=yes
    state_path: str
    hosts: tuple[LabHost, ...]
    rootfs: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def network(self) -> str:
        return f"{self.prefix}.0/24"

    def host(self, name: str) -> LabHost:
        for host in self.hosts:
            if host.name == name:
                return host
        names = ", ".join(h.name for h in self.hosts)
        raise LabHostError(f"lab {self.name!r} has no host {name!r} (hosts: {names})", host=name)

    def by_role(self, role: Role | str) -> list[LabHost]:
        return [h for h in self.hosts if h.role == Role(role)]

    def ssh_options(self) -> list[str]:
        """Options every SSH client of the lab uses: no user config, the lab's key only, strict host keys."""
        return [
            "-F", "/dev/null", "-i", self.ssh_key, "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", "-o", "ForwardAgent=no",
        ]  # fmt: skip

    def ssh_command(self, host: str | LabHost, command: Sequence[str] | str | None = None) -> list[str]:
        """The argv running `command` (a shell string or an argv, quoted for the remote shell) on `host`."""
        target = host if isinstance(host, LabHost) else self.host(host)
        argv = ["ssh", *self.ssh_options(), "-p", str(target.ssh_port), f"root@{target.ssh_hostname}"]
        if command is None:
            return argv
        remote = command if isinstance(command, str) else shlex.join(command)
        return [*argv, "--", remote]

    def run(
        self, host: str | LabHost, command: Sequence[str] | str, *, check: bool = False, timeout: float = 60.0,
        input_text: str | None = None,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run `command` on `host` over SSH; with `check`, a non-zero exit raises LabHostError."""
        target = host if isinstance(host, LabHost) else self.host(host)
        proc = subprocess.run(
            self.ssh_command(target, command), input=input_text, capture_output=True, text=True, timeout=timeout,
            check=False, stdin=None if input_text is not None else subprocess.DEVNULL,
        )  # fmt: skip
        if check and proc.returncode != 0:
            detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise LabHostError(f"{target.name}: `{command}` exited {proc.returncode}: {detail}", host=target.name)
        return proc

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION, "name": self.name, "prefix": self.prefix, "network": self.network,
            "ssh_key": self.ssh_key, "known_hosts": self.known_hosts, "state_path": self.state_path,
            "rootfs": self.rootfs, "timings": self.timings, "hosts": [h.to_json() for h in self.hosts],
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabState:
        if data.get("version") != STATE_VERSION:
            raise LabError(f"lab state version {data.get('version')!r} is not {STATE_VERSION}")
        return cls(
            name=data["name"], prefix=data["prefix"], ssh_key=data["ssh_key"], known_hosts=data["known_hosts"],
            state_path=data["state_path"], hosts=tuple(LabHost.from_json(h) for h in data["hosts"]),
            rootfs=data.get("rootfs", ""), timings=dict(data.get("timings", {})),
        )  # fmt: skip


def load_state(name: str = "lab", root: Path = LAB_ROOT) -> LabState:
    """The state of the running lab `name`; LabNotRunningError when it is not up."""
    path = state_path(name, root)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise LabNotRunningError(name, str(path)) from None
    except OSError as err:
        raise LabError(f"cannot read lab state {path}: {err.strerror}", hint="the lab needs root") from None
    try:
        return LabState.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError) as err:
        raise LabError(f"lab state {path} is unreadable: {err}", hint=f"run: meshctl lab down --name {name}") from err


def save_state(state: LabState, root: Path = LAB_ROOT) -> Path:
    """Write the state atomically (a reader never sees half a file)."""
    path = state_path(state.name, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".state-", suffix=".json")
    with os.fdopen(fd, "w") as out:
        json.dump(state.to_json(), out, indent=2, sort_keys=True)
        out.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path
