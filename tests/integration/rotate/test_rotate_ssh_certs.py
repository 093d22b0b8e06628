"""SSH certificates end to end on a real sshd: host cert installed by the agent code, user cert from the admin
API, a client whose known_hosts holds only the `@cert-authority` line (no trust on first use)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from meshctl.agent.sshcert import SshCertAgentError, SshPaths, collect_host_keys, install_host_certs, request_host_certs
from meshctl.control.sealing import RequestOpener
from meshctl.control.ssh_api import SshNodeIdentity, configure_ssh, router
from meshctl.keys import ControlPrivateKey, MachinePrivateKey, MachinePublicKey
from meshctl.keys.sshca import SshCa, known_hosts_line

from .conftest import SSHD, PrivateSshd, need_root_sshd, start_sshd, stop_sshd

pytestmark = [pytest.mark.integration, pytest.mark.root]


def _sshd_check(config: Path) -> Any:
    def check() -> str | None:
        proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               f"mount -t tmpfs none /run && mkdir -p /run/sshd && {SSHD} -t -f {config}"],
                              capture_output=True, text=True)
        return None if proc.returncode == 0 else proc.stderr.strip()
    return check


class Control:
    def __init__(self, tmp: Path) -> None:
        self.key = ControlPrivateKey.generate()
        self.machine = MachinePrivateKey.generate()
        app = FastAPI()
        app.include_router(router)

        def lookup(m: MachinePublicKey) -> SshNodeIdentity | None:
            return SshNodeIdentity("n1", "n1", ("100.64.0.5",)) if m == self.machine.public_key() else None

        def admin(request: Request) -> Any:
            return None

        self.settings = configure_ssh(app, state_dir=tmp / "control", opener=RequestOpener(self.key),
                                      lookup_node=lookup, require_admin=admin, domain="mesh.internal",
                                      prefixes=("100.64.0.0/10",))
        self.transport = httpx.ASGITransport(app=app)

    def user_cert(self, pubkey: Path, principals: list[str]) -> str:
        async def go() -> httpx.Response:
            async with httpx.AsyncClient(transport=self.transport, base_url="http://c") as c:
                return await c.post("/api/v1/ssh/user-cert", json={
                    "user": "alice", "principals": principals, "ttl": "1h", "publicKey": pubkey.read_text()})
        r = asyncio.run(go())
        assert r.status_code == 200, r.text
        return str(r.json()["certificate"])


@pytest.fixture(scope="module")
def certified_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrivateSshd, Control, Path]]:
    need_root_sshd()
    base = tmp_path_factory.mktemp("certsshd")
    d = base / "n1"
    d.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "ssh_host_ed25519_key")], check=True)
    control = Control(base)
    paths = SshPaths(ssh_dir=d, dropin=d / "sshd_config.d" / "meshctl.conf", user_ca=d / "meshctl_user_ca.pub")
    keys = collect_host_keys(paths)
    reply = asyncio.run(request_host_certs("http://control", control.key.public_key(), control.machine,
                                           [line for _, line in keys], transport=control.transport))
    # the sshd_config must exist for the check; start_sshd rewrites it identically
    install_host_certs(paths, [p for p, _ in keys], reply)
    sshd = start_sshd(base, "n1", extra_config=f"Include {d}/sshd_config.d/*.conf", hostkey="ssh_host_ed25519_key")
    try:
        yield sshd, control, paths.dropin
    finally:
        stop_sshd(sshd)


def _ssh(sshd: PrivateSshd, key: Path, known: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={known}", "-o", "GlobalKnownHostsFile=/dev/null",
         "-o", "StrictHostKeyChecking=yes", "-o", "HostKeyAlias=n1.mesh.internal", *extra,
         "-p", str(sshd.port), "root@127.0.0.1", "echo", "logged-in"], capture_output=True, text=True, timeout=30)


def test_user_cert_login_with_only_the_ca_line(certified_sshd: tuple[PrivateSshd, Control, Path],
                                               tmp_path: Path) -> None:
    sshd, control, dropin = certified_sshd
    assert "HostCertificate" in dropin.read_text() and "TrustedUserCAKeys" in dropin.read_text()
    sshd.authorized_keys.write_text("")  # no authorized_keys at all: only the user CA can let anyone in
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    known = tmp_path / "known_hosts"
    known.write_text(known_hosts_line(control.settings.ca.public_line(), "mesh.internal", ["100.64.0.0/10"]) + "\n")

    # without a certificate: refused
    assert _ssh(sshd, key, known).returncode != 0
    Path(f"{key}-cert.pub").write_text(control.user_cert(key.with_suffix(".pub"), ["root"]) + "\n")
    ok = _ssh(sshd, key, known, "-o", f"CertificateFile={key}-cert.pub")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "logged-in"
    assert known.read_text().count("\n") == 1  # nothing was learned on first use


def test_audit_reads_the_certificate_sshd_presents(certified_sshd: tuple[PrivateSshd, Control, Path]) -> None:
    from meshctl.rotate.audit import audit_host_cert, scan_host_cert
    from meshctl.rotate.sshexec import SshTarget
    from meshctl.workspace import RotationPolicy

    sshd, control, _ = certified_sshd
    cert, error = scan_host_cert(SshTarget("n1", "127.0.0.1", sshd.port))
    assert error is None and cert is not None
    assert cert.key_id.startswith("meshctl-host:n1:")
    verdict = audit_host_cert("n1", cert, time.time(), RotationPolicy(), control.settings.ca.public_line())
    assert verdict.status == "ok" and not verdict.flagged


def test_certificate_for_another_principal_is_refused(certified_sshd: tuple[PrivateSshd, Control, Path],
                                                      tmp_path: Path) -> None:
    sshd, control, _ = certified_sshd
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    known = tmp_path / "known_hosts"
    known.write_text(known_hosts_line(control.settings.ca.public_line(), "mesh.internal") + "\n")
    Path(f"{key}-cert.pub").write_text(control.user_cert(key.with_suffix(".pub"), ["nobody"]) + "\n")
    assert _ssh(sshd, key, known, "-o", f"CertificateFile={key}-cert.pub").returncode != 0


def test_host_from_another_ca_is_not_trusted(certified_sshd: tuple[PrivateSshd, Control, Path],
                                             tmp_path: Path) -> None:
    sshd, control, _ = certified_sshd
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    Path(f"{key}-cert.pub").write_text(control.user_cert(key.with_suffix(".pub"), ["root"]) + "\n")
    known = tmp_path / "known_hosts"
    known.write_text(known_hosts_line(SshCa.generate().public_line(), "mesh.internal") + "\n")
    r = _ssh(sshd, key, known, "-o", f"CertificateFile={key}-cert.pub")
    assert r.returncode != 0 and "verification failed" in r.stderr.lower()


def test_install_rolls_back_when_sshd_rejects(tmp_path: Path) -> None:
    need_root_sshd()
    d = tmp_path / "ssh"
    d.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "ssh_host_ed25519_key")], check=True)
    control = Control(tmp_path)
    paths = SshPaths(ssh_dir=d, dropin=d / "sshd_config.d" / "meshctl.conf", user_ca=d / "meshctl_user_ca.pub")
    keys = collect_host_keys(paths)
    reply = asyncio.run(request_host_certs("http://control", control.key.public_key(), control.machine,
                                           [line for _, line in keys], transport=control.transport))
    config = d / "sshd_config"
    # an sshd_config that includes the drop-in but whose HostKey is missing: `sshd -t` fails
    config.write_text(f"HostKey {d}/missing_key\nInclude {d}/sshd_config.d/*.conf\n")
    with pytest.raises(SshCertAgentError, match="kept the old one"):
        install_host_certs(paths, [p for p, _ in keys], reply, validate=_sshd_check(config))
    assert not paths.dropin.exists() and not paths.user_ca.exists()
    assert not SshPaths.cert_path(keys[0][0]).exists()
    # with a valid config the same install goes through and a second one changes nothing
    config.write_text(f"HostKey {d}/ssh_host_ed25519_key\nInclude {d}/sshd_config.d/*.conf\n")
    assert install_host_certs(paths, [p for p, _ in keys], reply, validate=_sshd_check(config)) is True
    assert install_host_certs(paths, [p for p, _ in keys], reply, validate=_sshd_check(config)) is False


def test_audit_tells_missing_certificate_from_unreachable_sshd(tmp_path: Path) -> None:
    from meshctl.rotate.audit import scan_host_cert
    from meshctl.rotate.sshexec import SshTarget

    need_root_sshd()
    plain = start_sshd(tmp_path, "plain")
    try:
        assert scan_host_cert(SshTarget("plain", "127.0.0.1", plain.port)) == (None, None)
    finally:
        stop_sshd(plain)
    cert, error = scan_host_cert(SshTarget("gone", "127.0.0.1", plain.port), timeout=2)
    assert cert is None and error == f"cannot reach sshd at 127.0.0.1:{plain.port}"
