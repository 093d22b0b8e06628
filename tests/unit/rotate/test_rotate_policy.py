"""Due-date logic of the rotation policy, driven by a fake clock."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshctl.keys.sshca import SshCa, parse_certificate
from meshctl.rotate.policy import deploy_key_due, host_cert_due, host_cert_margin, node_key_due, node_key_lead
from meshctl.workspace import RotationPolicy

DAY = 86400
T0 = 1_800_000_000.0
POLICY = RotationPolicy()  # 180d node keys, 30d host certs renewed 10d before, 90d deploy key


def _pub() -> str:
    return Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def test_node_key_lead_is_a_tenth_capped_at_a_week() -> None:
    assert node_key_lead(POLICY) == 7 * DAY
    assert node_key_lead(RotationPolicy(node_key_max_age=10 * DAY)) == DAY


def test_node_key_becomes_due_a_lead_before_max_age() -> None:
    due_at = T0 + 173 * DAY
    assert not node_key_due(T0, due_at - 1, POLICY).due
    d = node_key_due(T0, due_at, POLICY)
    assert d.due and d.due_at == due_at
    assert "173d old" in d.reason and "node_key_max_age 180d" in d.reason


def test_node_key_due_earlier_when_control_expires_it_sooner() -> None:
    expiry = T0 + 30 * DAY
    assert not node_key_due(T0, expiry - 7 * DAY - 1, POLICY, key_expiry=expiry).due
    d = node_key_due(T0, expiry - 7 * DAY, POLICY, key_expiry=expiry)
    assert d.due and "key expiry" in d.reason


def test_deploy_key_due_at_max_age() -> None:
    assert not deploy_key_due(T0, T0 + 90 * DAY - 1, POLICY).due
    d = deploy_key_due(T0, T0 + 91 * DAY, POLICY)
    assert d.due and d.overdue_by(T0 + 91 * DAY) == DAY


@pytest.mark.parametrize(
    ("validity", "margin"),
    [(30 * DAY, 10 * DAY), (90 * DAY, 10 * DAY), (10 * DAY, 10 * DAY // 3), (60, 20)],
)
def test_host_cert_margin(validity: int, margin: int) -> None:
    assert host_cert_margin(validity, POLICY) == margin


def test_host_cert_renewal_over_time() -> None:
    ca = SshCa.generate()
    pub = _pub()
    cert = parse_certificate(ca.sign_host(pub, hostname="n1", principals=["n1"], now=T0))
    kw = {"host_key": pub, "ca_key": ca.public_line(), "principals": ["n1"]}
    assert not host_cert_due(cert, T0, POLICY, **kw).due
    assert not host_cert_due(cert, T0 + 20 * DAY - 1, POLICY, **kw).due
    d = host_cert_due(cert, T0 + 20 * DAY, POLICY, **kw)
    assert d.due and "renewal margin 10d" in d.reason
    d = host_cert_due(cert, T0 + 31 * DAY, POLICY, **kw)
    assert d.due and "expired" in d.reason


def test_short_host_cert_renews_at_two_thirds() -> None:
    ca = SshCa.generate()
    pub = _pub()
    cert = parse_certificate(ca.sign_host(pub, hostname="n1", principals=["n1"], now=T0, validity=600))
    # valid from T0-300 to T0+600: 900 s of validity, margin 300 s
    assert not host_cert_due(cert, T0 + 299, POLICY).due
    assert host_cert_due(cert, T0 + 300, POLICY).due


@pytest.mark.parametrize(
    ("change", "reason"),
    [("host_key", "host key changed"), ("ca_key", "another CA"), ("principals", "principals changed")],
)
def test_host_cert_due_when_it_no_longer_matches(change: str, reason: str) -> None:
    ca = SshCa.generate()
    pub = _pub()
    cert = parse_certificate(ca.sign_host(pub, hostname="n1", principals=["n1"], now=T0))
    kw: dict[str, object] = {"host_key": pub, "ca_key": ca.public_line(), "principals": ["n1"]}
    kw[change] = {"host_key": _pub(), "ca_key": SshCa.generate().public_line(),
                  "principals": ["n1", "100.64.0.9"]}[change]
    d = host_cert_due(cert, T0, POLICY, **kw)  # type: ignore[arg-type]
    assert d.due and reason in d.reason


def test_missing_or_user_cert_is_due() -> None:
    assert host_cert_due(None, T0, POLICY).due
    ca = SshCa.generate()
    user = parse_certificate(ca.sign_user(_pub(), user="a", principals=["root"], now=T0))
    assert "user certificate" in host_cert_due(user, T0, POLICY).reason
