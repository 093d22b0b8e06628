"""Audit verdicts with a fake clock: what gets flagged and why."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshctl.keys.sshca import SshCa, parse_certificate
from meshctl.rotate.audit import (
    audit_api_key,
    audit_auth_key,
    audit_deploy_key,
    audit_host_cert,
    audit_node,
    parse_created,
)
from meshctl.rotate.deploykey import created_comment
from meshctl.workspace import RotationPolicy

DAY = 86400
NOW = 1_800_000_000.0
POLICY = RotationPolicy()


def _iso(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_deploy_key_age_comes_from_its_comment() -> None:
    line = "ssh-ed25519 AAAA " + created_comment("m", NOW - 100 * DAY)
    assert parse_created(line) == NOW - 100 * DAY
    a = audit_deploy_key("deploy_ed25519", line, mtime=NOW, now=NOW, policy=POLICY)
    assert a.status == "overdue" and a.flagged and "100d old" in a.reason
    assert audit_deploy_key("k", "ssh-ed25519 AAAA x", mtime=NOW - 85 * DAY, now=NOW, policy=POLICY).status == "due"
    assert audit_deploy_key("k", "ssh-ed25519 AAAA x", mtime=NOW - DAY, now=NOW, policy=POLICY).status == "ok"


def test_node_key_verdicts() -> None:
    node = {"name": "web-1", "nodeKey": "nodekey:" + "ab" * 32, "tags": ["tag:web"], "createdAt": NOW - 10 * DAY}
    assert audit_node({**node, "keyExpiry": _iso(NOW + 100 * DAY)}, NOW, POLICY).status == "ok"
    due = audit_node({**node, "keyExpiry": _iso(NOW + 3 * DAY)}, NOW, POLICY)
    assert due.status == "due" and due.owner == "tag:web" and "expires in 3d" in due.reason
    assert audit_node({**node, "keyExpiry": _iso(NOW - DAY)}, NOW, POLICY).status == "expired"
    assert audit_node({**node, "keyExpiry": None, "keyExpiryDisabled": True}, NOW, POLICY).status == "ok"


def test_token_verdicts() -> None:
    base = {"id": "0123456789ab", "user": "ops", "createdAt": _iso(NOW - DAY)}
    assert audit_auth_key({**base, "expiresAt": _iso(NOW + DAY)}, NOW).status == "ok"
    assert audit_auth_key({**base, "expiresAt": _iso(NOW - DAY)}, NOW).status == "expired"
    assert audit_auth_key({**base, "expiresAt": _iso(NOW - DAY), "used": True}, NOW).status == "inactive"
    assert audit_auth_key({**base, "expiresAt": _iso(NOW - DAY), "revoked": True}, NOW).flagged is False
    assert audit_auth_key({**base, "reusable": True, "used": True, "expiresAt": _iso(NOW - DAY)}, NOW).flagged
    api = audit_api_key({**base, "expiresAt": None}, NOW)
    assert api.status == "no-expiry" and api.flagged


def test_host_cert_verdicts() -> None:
    ca = SshCa.generate()
    pub = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    cert = parse_certificate(ca.sign_host(pub, hostname="n1", principals=["n1"], now=NOW))
    assert audit_host_cert("n1", cert, NOW, POLICY, ca.public_line()).status == "ok"
    assert audit_host_cert("n1", cert, NOW + 25 * DAY, POLICY, ca.public_line()).status == "due"
    assert audit_host_cert("n1", cert, NOW + 31 * DAY, POLICY, ca.public_line()).status == "expired"
    assert audit_host_cert("n1", cert, NOW, POLICY, SshCa.generate().public_line()).status == "foreign-ca"
    assert audit_host_cert("n1", None, NOW, POLICY, None).status == "missing"
    assert audit_host_cert("n1", None, NOW, POLICY, None, error="cannot reach").status == "unknown"
