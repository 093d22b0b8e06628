"""SSH CA: certificate contents (principals, validity, options, key ids), checked by OpenSSH's own parser."""

from __future__ import annotations

import os
import pickle
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshctl.keys import KeyFileModeError
from meshctl.keys.sshca import (
    CLOCK_SKEW,
    DEFAULT_HOST_CERT_VALIDITY,
    DEFAULT_USER_EXTENSIONS,
    CertKind,
    SshCa,
    SshCertError,
    host_principals,
    known_hosts_line,
    parse_certificate,
    user_ca_public_line,
)

NOW = 1_800_000_000


def _pubkey() -> str:
    key = Ed25519PrivateKey.generate()
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode() + " root@n1"


@pytest.fixture(scope="module")
def ca() -> SshCa:
    return SshCa.generate()


def test_host_certificate_contents(ca: SshCa) -> None:
    pub = _pubkey()
    principals = host_principals("n1", "n1", "mesh.internal", ["100.64.0.7/32", "fd7a:115c:a1e0::7"])
    assert principals == ["n1", "n1.mesh.internal", "100.64.0.7", "fd7a:115c:a1e0::7"]
    line = ca.sign_host(pub, hostname="n1", principals=principals, now=NOW, serial=42)
    info = parse_certificate(line)
    assert info.kind is CertKind.host
    assert info.key_id == "meshctl-host:n1:42"
    assert info.serial == 42
    assert info.principals == tuple(principals)
    assert info.valid_after == NOW - CLOCK_SKEW
    assert info.valid_before == NOW + DEFAULT_HOST_CERT_VALIDITY == NOW + 30 * 86400
    assert info.critical_options == {}
    assert info.extensions == ()
    assert info.public_key == " ".join(pub.split()[:2])
    assert info.signature_key == " ".join(ca.public_line().split()[:2])


def test_user_certificate_contents(ca: SshCa) -> None:
    line = ca.sign_user(_pubkey(), user="alice", principals=["root", "deploy"], now=NOW, ttl=8 * 3600, serial=7,
                        source_addresses=["100.64.0.0/10"])
    info = parse_certificate(line)
    assert info.kind is CertKind.user
    assert info.key_id == "meshctl-user:alice:7"
    assert info.principals == ("root", "deploy")
    assert info.valid_before - NOW == 8 * 3600
    assert info.critical_options == {"source-address": "100.64.0.0/10"}
    assert info.extensions == tuple(sorted(DEFAULT_USER_EXTENSIONS))
    assert "permit-pty" in info.extensions and "permit-X11-forwarding" not in info.extensions


def test_random_serials_differ(ca: SshCa) -> None:
    pub = _pubkey()
    a = parse_certificate(ca.sign_host(pub, hostname="n1", principals=["n1"], now=NOW))
    b = parse_certificate(ca.sign_host(pub, hostname="n1", principals=["n1"], now=NOW))
    assert a.serial != b.serial and a.key_id != b.key_id


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs OpenSSH's ssh-keygen")
def test_openssh_reads_certificates(ca: SshCa, tmp_path: Path) -> None:
    host = tmp_path / "host-cert.pub"
    host.write_text(ca.sign_host(_pubkey(), hostname="n1", principals=["n1", "n1.mesh.internal"], now=NOW,
                                 serial=99) + "\n")
    out = subprocess.run(["ssh-keygen", "-L", "-f", str(host)], capture_output=True, text=True, check=True).stdout
    assert "host certificate" in out
    assert 'Key ID: "meshctl-host:n1:99"' in out
    assert "n1.mesh.internal" in out
    user = tmp_path / "user-cert.pub"
    user.write_text(ca.sign_user(_pubkey(), user="bob", principals=["root"], now=NOW,
                                 source_addresses=["100.64.0.0/10"], force_command="uptime") + "\n")
    out = subprocess.run(["ssh-keygen", "-L", "-f", str(user)], capture_output=True, text=True, check=True).stdout
    assert "user certificate" in out
    assert "source-address 100.64.0.0/10" in out
    assert "force-command uptime" in out
    assert "permit-pty" in out


def test_known_hosts_line(ca: SshCa) -> None:
    line = known_hosts_line(ca.public_line(), "mesh.internal", ["100.64.0.0/10", "fd7a:115c:a1e0::/48"])
    marker, patterns, kind, b64 = line.split(" ")
    assert marker == "@cert-authority"
    assert patterns == "*.mesh.internal,100.*,fd7a:115c:a1e0:*"
    assert f"{kind} {b64}" == " ".join(ca.public_line().split()[:2])


def test_ca_key_file_is_private_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "state" / "ssh_ca"
    ca1, created = SshCa.load_or_create(path)
    assert created
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    ca2, created = SshCa.load_or_create(path)
    assert not created and ca2.public_line() == ca1.public_line()
    assert user_ca_public_line(path.parent) == ca1.public_line()
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileModeError):
        SshCa.load(path)


def test_ca_repr_and_pickle_do_not_leak(ca: SshCa) -> None:
    assert "PRIVATE" not in repr(ca)
    with pytest.raises(TypeError):
        pickle.dumps(ca)


@pytest.mark.parametrize(
    ("pub", "message"),
    [
        ("", "not an SSH public key line"),
        ("ssh-ed25519 !!!notbase64", "malformed SSH public key"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----", "not an SSH public key line"),
    ],
)
def test_bad_public_keys_are_refused(ca: SshCa, pub: str, message: str) -> None:
    with pytest.raises(SshCertError, match=message):
        ca.sign_host(pub, hostname="n1", principals=["n1"], now=NOW)


def test_certificate_is_not_accepted_as_key(ca: SshCa) -> None:
    cert = ca.sign_host(_pubkey(), hostname="n1", principals=["n1"], now=NOW)
    with pytest.raises(SshCertError, match="not an SSH public key line"):
        ca.sign_host(cert, hostname="n1", principals=["n1"], now=NOW)


@pytest.mark.parametrize("principal", ["a b", "x,y", "*", ""])
def test_bad_principals_are_refused(ca: SshCa, principal: str) -> None:
    with pytest.raises(SshCertError):
        ca.sign_user(_pubkey(), user="alice", principals=[principal], now=NOW)


def test_user_ttl_bounds(ca: SshCa) -> None:
    with pytest.raises(SshCertError, match="out of range"):
        ca.sign_user(_pubkey(), user="alice", principals=["root"], now=NOW, ttl=30 * 86400)
    with pytest.raises(SshCertError, match="out of range"):
        ca.sign_user(_pubkey(), user="alice", principals=["root"], now=NOW, ttl=0)


def test_tampered_certificate_is_refused(ca: SshCa) -> None:
    import base64

    kind, b64 = ca.sign_host(_pubkey(), hostname="n1", principals=["n1"], now=NOW).split()[:2]
    blob = bytearray(base64.b64decode(b64))
    blob[-10] ^= 1  # inside the signature
    with pytest.raises(SshCertError):
        parse_certificate(f"{kind} {base64.b64encode(bytes(blob)).decode()}")
