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

from ..keys.sshca import CertInfo, Due, cert_due, cert_margin
from ..keys.sshca import fmt_duration as _fmt
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
    return cert_margin(validity, policy.host_cert_renew_before)


def host_cert_due(cert: CertInfo | None, now: float, policy: RotationPolicy, *,
                  host_key: str | None = None, ca_key: str | None = None,
                  principals: Sequence[str] | None = None) -> Due:
    """Should the host certificate `cert` (None: none installed) be renewed now? (see `sshca.cert_due`)"""
    return cert_due(cert, now, policy.host_cert_renew_before, host_key=host_key, ca_key=ca_key,
                    principals=principals)


def deploy_key_due(created_at: float, now: float, policy: RotationPolicy) -> Due:
    """Is the workspace deploy key (created at `created_at`) older than `deploy_key_max_age`?"""
    due_at = created_at + policy.deploy_key_max_age
    age = now - created_at
    if now >= due_at:
        return Due("deploy-key", True, due_at,
                   f"deploy key is {_fmt(age)} old, over deploy_key_max_age {_fmt(policy.deploy_key_max_age)}")
    return Due("deploy-key", False, due_at, f"deploy key is {_fmt(age)} old; due in {_fmt(due_at - now)}")

