"""When a key is due for rotation, by the workspace's `[rotation]` policy. Pure: `now` is passed in.

    node key        due `lead` before min(created + node_key_max_age, key expiry from control),
                    lead = min(max age / 10, 7 days) so a daily timer always gets there first
    SSH host cert   due when less than the renewal margin is left: `host_cert_renew_before` when that
                    is shorter than the certificate's validity, else a third of the validity (a short
                    test certificate renews at 2/3 of its life instead of at once); due at once when it
                    is missing, expired, for another key, from another CA, or names other principals
    deploy key      due at created + deploy_key_max_age

Every answer is a `Due` saying when and why, so a scheduled run can log its reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..keys.sshca import CertInfo, CertKind
from ..workspace import RotationPolicy

__all__ = [
    "Due",
    "deploy_key_due",
    "host_cert_due",
    "host_cert_margin",
    "node_key_due",
    "node_key_lead",
]

_WEEK = 7 * 86400


@dataclass(frozen=True, slots=True)
class Due:
    """One decision: `due` now or not, the time it becomes due (epoch seconds), and why."""

    what: str
    due: bool
    due_at: float
    reason: str

    def overdue_by(self, now: float) -> float:
        return max(0.0, now - self.due_at)


def _fmt(seconds: float) -> str:
    s = int(abs(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def node_key_lead(policy: RotationPolicy) -> int:
    """How long before its maximum age (or expiry) a node key is rotated."""
    return min(policy.node_key_max_age // 10, _WEEK)


def node_key_due(created_at: float, now: float, policy: RotationPolicy, *, key_expiry: float | None = None) -> Due:
    """Is the node key created at `created_at` (and expiring at `key_expiry`, if control set one) due?"""
    lead = node_key_lead(policy)
    limit = created_at + policy.node_key_max_age
    why = f"older than node_key_max_age {_fmt(policy.node_key_max_age)} minus {_fmt(lead)}"
    if key_expiry is not None and key_expiry < limit:
        limit = key_expiry
        why = f"expires at {int(key_expiry)} (control's key expiry) within {_fmt(lead)}"
    due_at = limit - lead
    age = now - created_at
    if now >= due_at:
        return Due("node-key", True, due_at, f"node key is {_fmt(age)} old: {why}")
    return Due("node-key", False, due_at, f"node key is {_fmt(age)} old; due in {_fmt(due_at - now)}")


def host_cert_margin(validity: int, policy: RotationPolicy) -> int:
    """Renewal margin for a certificate valid for `validity` seconds."""
    if 0 < policy.host_cert_renew_before < validity:
        return policy.host_cert_renew_before
    return max(validity // 3, 1)


def host_cert_due(cert: CertInfo | None, now: float, policy: RotationPolicy, *,
                  host_key: str | None = None, ca_key: str | None = None,
                  principals: Sequence[str] | None = None) -> Due:
    """Should the host certificate `cert` (None: none installed) be renewed now?

    `host_key`, `ca_key` (OpenSSH `type base64`, comments ignored) and `principals` are what the
    certificate should say; pass what is known.
    """
    if cert is None:
        return Due("host-cert", True, now, "no host certificate installed")
    if cert.kind is not CertKind.host:
        return Due("host-cert", True, now, "installed certificate is a user certificate")
    if host_key is not None and _bare(host_key) != _bare(cert.public_key):
        return Due("host-cert", True, now, "certificate is for another host key (host key changed)")
    if ca_key is not None and _bare(ca_key) != _bare(cert.signature_key):
        return Due("host-cert", True, now, "certificate was signed by another CA key")
    if principals is not None and set(principals) != set(cert.principals):
        missing = sorted(set(principals) - set(cert.principals))
        extra = sorted(set(cert.principals) - set(principals))
        return Due("host-cert", True, now, f"principals changed (missing {missing}, extra {extra})")
    if now >= cert.valid_before:
        return Due("host-cert", True, float(cert.valid_before),
                   f"certificate expired {_fmt(now - cert.valid_before)} ago")
    margin = host_cert_margin(cert.validity, policy)
    due_at = float(cert.valid_before - margin)
    left = cert.valid_before - now
    if now >= due_at:
        return Due("host-cert", True, due_at,
                   f"{_fmt(left)} of {_fmt(cert.validity)} validity left, renewal margin {_fmt(margin)}")
    return Due("host-cert", False, due_at, f"{_fmt(left)} validity left; renewal due in {_fmt(due_at - now)}")


def deploy_key_due(created_at: float, now: float, policy: RotationPolicy) -> Due:
    """Is the workspace deploy key (created at `created_at`) older than `deploy_key_max_age`?"""
    due_at = created_at + policy.deploy_key_max_age
    age = now - created_at
    if now >= due_at:
        return Due("deploy-key", True, due_at,
                   f"deploy key is {_fmt(age)} old, over deploy_key_max_age {_fmt(policy.deploy_key_max_age)}")
    return Due("deploy-key", False, due_at, f"deploy key is {_fmt(age)} old; due in {_fmt(due_at - now)}")


def _bare(line: str) -> str:
    return " ".join(line.split()[:2])
