"""`meshctl control serve --tls-cert/--tls-key`: the node protocol over HTTPS, verified against the cert."""

from __future__ import annotations

import datetime
import ipaddress
import signal
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meshctl.control.client import ControlClient
from meshctl.control.config import ControlConfig
from meshctl.control.local import create_auth_key
from meshctl.keys import ControlPublicKey, MachinePrivateKey, NodePrivateKey

from .conftest import free_port, hostinfo, run
from .test_control_cli import MESHCTL

pytestmark = pytest.mark.integration


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def test_serve_over_tls(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    state = tmp_path / "state"
    authkey = create_auth_key(ControlConfig(state_dir=state), reusable=False, ephemeral=False, tags=[],
                              expiry=600.0)["key"]
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen([MESHCTL, "control", "serve", "--state-dir", str(state), "--listen", f"127.0.0.1:{port}",
                             "--tls-cert", str(cert), "--tls-key", str(key)], stdout=log, stderr=subprocess.STDOUT)
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.time() + 20
        while True:
            try:
                if httpx.get(url + "/healthz", verify=ssl.create_default_context(cafile=str(cert)), timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.1)
        with pytest.raises(httpx.TransportError):  # plain HTTP is not served on the TLS port
            httpx.get(url.replace("https", "http") + "/healthz", timeout=2).raise_for_status()
        pub = ControlPublicKey.from_text((state / "control.pub").read_text())

        async def go() -> None:
            transport = httpx.AsyncHTTPTransport(verify=ssl.create_default_context(cafile=str(cert)))
            async with ControlClient(url, pub, MachinePrivateKey.generate(), transport=transport) as c:
                assert await c.fetch_control_key() == pub
                res = await c.register(NodePrivateKey.generate(), auth_key=authkey, hostinfo=hostinfo("tls"))
                assert res.machine_authorized
        run(go())
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
