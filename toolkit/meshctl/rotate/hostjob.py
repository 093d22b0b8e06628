"""The scheduled job on a host (`meshctl agent rotate --if-due`, run by `meshctl-rotate.timer`).

It reads the rotation policy from `/etc/meshctl/rotation.toml` (written by the ssh role; defaults when
absent), then, each independently so one failure does not stop the other:

- node key: due by age (`node.key`'s modification time: the agent rewrites it on every rotation) or by
  control's key expiry (from the agent's local API) → asks the running agent to rotate;
- SSH host certificate: due when less than the renewal margin is left, or missing, or for another
  host key → renewed over the machine-key channel, installed, sshd reloaded.

Each result is one line saying what was done and why; the service's stdout goes to the journal.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..agent import localclient
from ..agent.config import AgentConfig
from ..agent.sshcert import SshPaths, ensure_host_cert
from ..errors import ConfigError, MeshctlError
from ..workspace import RotationPolicy, parse_duration
from .policy import node_key_due

__all__ = ["DEFAULT_POLICY_PATH", "JobLine", "load_host_policy", "run_host_jobs"]

DEFAULT_POLICY_PATH = Path("/etc/meshctl/rotation.toml")
_SSH_PATHS = SshPaths()


@dataclass(frozen=True, slots=True)
class JobLine:
    what: str  # "node-key" | "host-cert"
    action: str  # "rotated" | "renewed" | "not-due" | "failed"
    reason: str

    def __str__(self) -> str:
        return f"{self.what}: {self.action}: {self.reason}"

    def to_json(self) -> dict[str, str]:
        return {"what": self.what, "action": self.action, "reason": self.reason}


def load_host_policy(path: Path = DEFAULT_POLICY_PATH) -> tuple[RotationPolicy, int | None]:
    """(policy, host certificate validity to ask for or None for control's default)."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return RotationPolicy(), None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: malformed TOML: {e}") from None
    rot = data.get("rotation", data)
    known = {"node_key_max_age", "host_cert_validity", "host_cert_renew_before", "deploy_key_max_age"}
    unknown = sorted(set(rot) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}", hint="known: " + ", ".join(sorted(known)))
    d = RotationPolicy()
    validity = rot.get("host_cert_validity")
    policy = RotationPolicy(
        node_key_max_age=parse_duration(rot.get("node_key_max_age", d.node_key_max_age), "node_key_max_age"),
        host_cert_validity=parse_duration(validity, "host_cert_validity") if validity else d.host_cert_validity,
        host_cert_renew_before=parse_duration(rot.get("host_cert_renew_before", d.host_cert_renew_before),
                                              "host_cert_renew_before"),
        deploy_key_max_age=parse_duration(rot.get("deploy_key_max_age", d.deploy_key_max_age), "deploy_key_max_age"),
    )
    return policy, (policy.host_cert_validity if validity else None)


def _node_key_job(cfg: AgentConfig, policy: RotationPolicy, now: float, force: bool,
                  status: Callable[[Path], dict[str, Any]], rotate: Callable[[Path], dict[str, Any]]) -> JobLine:
    try:
        created = os.stat(cfg.node_key_path).st_mtime
    except FileNotFoundError:
        return JobLine("node-key", "failed", f"{cfg.node_key_path} does not exist (has the agent registered?)")
    expiry: float | None = None
    try:
        info = status(cfg.socket)
        raw = info.get("self", {}).get("keyExpiry")
        expiry = float(raw) if isinstance(raw, int | float) else None
    except MeshctlError:
        pass  # the age alone still decides; the rotation below reports a stopped agent
    due = node_key_due(created, now, policy, key_expiry=expiry)
    if not (due.due or force):
        return JobLine("node-key", "not-due", due.reason)
    try:
        result = rotate(cfg.socket)
    except MeshctlError as err:
        return JobLine("node-key", "failed", f"{due.reason}; rotation failed: {err}")
    why = "forced" if force and not due.due else due.reason
    return JobLine("node-key", "rotated",
                   f"{why}; {result.get('oldNodeKey', '?')} -> {result.get('newNodeKey', '?')}")


async def run_host_jobs(cfg: AgentConfig, policy: RotationPolicy, now: float, *, if_due: bool = True,
                        host_cert_validity: int | None = None, paths: SshPaths = _SSH_PATHS,
                        status: Callable[[Path], dict[str, Any]] = localclient.status,
                        rotate: Callable[[Path], dict[str, Any]] = localclient.rotate_node_key) -> list[JobLine]:
    """Run the node-key and host-cert jobs (only what is due when `if_due`); one line per job."""
    lines = [_node_key_job(cfg, policy, now, not if_due, status, rotate)]
    try:
        out = await ensure_host_cert(cfg, policy.host_cert_renew_before, force=not if_due,
                                     validity=host_cert_validity, paths=paths, now=now)
    except MeshctlError as err:
        lines.append(JobLine("host-cert", "failed", str(err)))
    else:
        if not out.renewed:
            lines.append(JobLine("host-cert", "not-due", out.due.reason))
        else:
            why = out.due.reason if out.due.due else "forced"
            lines.append(JobLine("host-cert", "renewed", f"{why}; new certificate valid until {out.valid_before}"
                                 + (f", {out.reloaded} reloaded" if out.reloaded else "")))
    return lines
