"""`meshctl keys audit`: every key the mesh knows, its age, expiry and owner, flagged by policy.

Sources: the workspace (deploy key: creation time from its `created=` comment, else the file's mtime;
DERP mesh keys), the admin API (node keys with their expiry, auth keys, API keys, the SSH CA), and, with
an inventory, each host's SSH host certificate as its sshd presents it (`ssh-keyscan -c`). The verdict
functions are pure (`now` passed in); `collect_*` are the thin I/O around them.

Statuses: ok · due (rotate soon, by policy) · overdue (past the policy's maximum age) · expired ·
no-expiry (an API key that never expires) · missing (no host certificate) · foreign-ca · inactive
(used one-off or revoked: listed, not flagged) · unknown (a source could not be read).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..keys.sshca import CertInfo, SshCertError, cert_due, fmt_duration, parse_certificate
from ..workspace import RotationPolicy, Workspace
from .policy import deploy_key_due, node_key_lead
from .sshexec import SshTarget

__all__ = [
    "FLAGGED",
    "KeyAudit",
    "audit_api_key",
    "audit_auth_key",
    "audit_deploy_key",
    "audit_host_cert",
    "audit_node",
    "collect_host_certs",
    "collect_workspace",
    "parse_created",
]

FLAGGED = frozenset({"due", "overdue", "expired", "no-expiry", "missing", "foreign-ca", "unknown"})
_CREATED = re.compile(r"created=(\d{8}T\d{6}Z)")


@dataclass(frozen=True, slots=True)
class KeyAudit:
    kind: str  # deploy-key | node-key | auth-key | api-key | host-cert | derp-mesh-key | ssh-ca
    name: str
    owner: str
    created: float | None
    expires: float | None
    status: str
    reason: str

    @property
    def flagged(self) -> bool:
        return self.status in FLAGGED

    def to_json(self, now: float) -> dict[str, Any]:
        out = asdict(self)
        out["created"] = _iso(self.created)
        out["expires"] = _iso(self.expires)
        out["ageSeconds"] = None if self.created is None else int(now - self.created)
        out["flagged"] = self.flagged
        return out


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:
        t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


def parse_created(pub_line: str) -> float | None:
    """The creation time a meshctl deploy key carries in its comment (`created=YYYYmmddTHHMMSSZ`)."""
    m = _CREATED.search(pub_line)
    if m is None:
        return None
    return datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()


def audit_deploy_key(name: str, pub_line: str, mtime: float, now: float, policy: RotationPolicy) -> KeyAudit:
    created = parse_created(pub_line) or mtime
    due = deploy_key_due(created, now, policy)
    status = "overdue" if due.due else ("due" if now >= due.due_at - policy.deploy_key_max_age // 10 else "ok")
    return KeyAudit("deploy-key", name, "operator", created, None, status, due.reason)


def audit_node(node: Mapping[str, Any], now: float, policy: RotationPolicy) -> KeyAudit:
    name = str(node.get("name", node.get("id", "?")))
    owner = ",".join(node.get("tags") or []) or str(node.get("user", ""))
    created = _time(node.get("createdAt"))
    expiry = _time(node.get("keyExpiry"))
    key = str(node.get("nodeKey", ""))[:16]
    if node.get("keyExpiryDisabled") or expiry is None:
        return KeyAudit("node-key", name, owner, created, None, "ok", f"{key}…: key expiry disabled")
    lead = node_key_lead(policy)
    if now >= expiry:
        return KeyAudit("node-key", name, owner, created, expiry, "expired",
                        f"{key}…: expired {fmt_duration(now - expiry)} ago; the node must re-register")
    if now >= expiry - lead:
        return KeyAudit("node-key", name, owner, created, expiry, "due",
                        f"{key}…: expires in {fmt_duration(expiry - now)} (rotation lead {fmt_duration(lead)})")
    return KeyAudit("node-key", name, owner, created, expiry, "ok", f"{key}…: expires in {fmt_duration(expiry - now)}")


def _token_audit(kind: str, k: Mapping[str, Any], now: float, owner: str) -> KeyAudit:
    created, expires = _time(k.get("createdAt")), _time(k.get("expiresAt"))
    name = str(k.get("id", "?"))
    if k.get("revoked"):
        return KeyAudit(kind, name, owner, created, expires, "inactive", "revoked")
    if k.get("used") and not k.get("reusable"):
        return KeyAudit(kind, name, owner, created, expires, "inactive", "one-off key already used")
    if expires is None:
        return KeyAudit(kind, name, owner, created, None, "no-expiry", "never expires: replace it with one that does")
    if now >= expires:
        return KeyAudit(kind, name, owner, created, expires, "expired",
                        f"expired {fmt_duration(now - expires)} ago and not revoked")
    return KeyAudit(kind, name, owner, created, expires, "ok", f"expires in {fmt_duration(expires - now)}")


def audit_auth_key(k: Mapping[str, Any], now: float) -> KeyAudit:
    flags = [f for f in ("reusable", "ephemeral") if k.get(f)]
    owner = str(k.get("user", "")) + (f" ({','.join(flags)})" if flags else "")
    return _token_audit("auth-key", k, now, owner)


def audit_api_key(k: Mapping[str, Any], now: float) -> KeyAudit:
    return _token_audit("api-key", k, now, "admin")


def audit_host_cert(host: str, cert: CertInfo | None, now: float, policy: RotationPolicy,
                    ca_key: str | None, error: str | None = None) -> KeyAudit:
    if error is not None:
        return KeyAudit("host-cert", host, host, None, None, "unknown", error)
    if cert is None:
        return KeyAudit("host-cert", host, host, None, None, "missing", "sshd presents no certificate")
    if ca_key is not None and " ".join(ca_key.split()[:2]) != cert.signature_key:
        return KeyAudit("host-cert", host, host, float(cert.valid_after), float(cert.valid_before), "foreign-ca",
                        f"{cert.key_id} is signed by another CA")
    due = cert_due(cert, now, policy.host_cert_renew_before)
    status = "ok" if not due.due else ("expired" if now >= cert.valid_before else "due")
    return KeyAudit("host-cert", host, host, float(cert.valid_after), float(cert.valid_before), status,
                    f"{cert.key_id}: {due.reason}")


def collect_workspace(ws: Workspace, now: float) -> list[KeyAudit]:
    out = []
    pub = Path(str(ws.deploy_key) + ".pub")
    if ws.deploy_key.exists():
        line = pub.read_text() if pub.exists() else ""
        out.append(audit_deploy_key(ws.deploy_key.name, line, os.stat(ws.deploy_key).st_mtime, now, ws.rotation))
    for f in sorted(ws.secrets_dir.glob("derp-mesh-*.key")):
        mtime = os.stat(f).st_mtime
        out.append(KeyAudit("derp-mesh-key", f.name, "region " + f.stem.removeprefix("derp-mesh-"), mtime, None,
                            "ok", f"{fmt_duration(now - mtime)} old (rotate with meshctl rotate derp-mesh-key)"))
    return out


def _keyscan(target: SshTarget, timeout: int, *extra: str) -> str | None:
    try:
        proc = subprocess.run(["ssh-keyscan", *extra, "-t", "ed25519", "-T", str(timeout), "-p", str(target.port),
                               target.hostname], capture_output=True, text=True, timeout=timeout + 5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout


def scan_host_cert(target: SshTarget, timeout: int = 5) -> tuple[CertInfo | None, str | None]:
    """The ed25519 host certificate `target`'s sshd presents (ssh-keyscan -c): (cert, None), (None, None) when
    sshd answers without a certificate, (None, error) when sshd cannot be reached or sends a bad one."""
    out = _keyscan(target, timeout, "-c") or ""
    for line in out.splitlines():
        parts = line.split()  # with -c: "<type>-cert-v01@openssh.com <base64> [# host banner]"
        for i, word in enumerate(parts[:-1]):
            if word.endswith("-cert-v01@openssh.com"):
                try:
                    return parse_certificate(f"{word} {parts[i + 1]}"), None
                except SshCertError as err:
                    return None, str(err)
    # no certificate: tell "sshd has none" from "sshd did not answer" with a plain key scan
    if "ssh-ed25519" in (_keyscan(target, timeout) or ""):
        return None, None
    return None, f"cannot reach sshd at {target.hostname}:{target.port}"


def collect_host_certs(targets: Sequence[SshTarget], now: float, policy: RotationPolicy,
                       ca_key: str | None) -> list[KeyAudit]:
    out = []
    for t in targets:
        cert, error = scan_host_cert(t)
        out.append(audit_host_cert(t.name, cert, now, policy, ca_key, error))
    return out


def summarize(rows: Iterable[KeyAudit]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    return counts
