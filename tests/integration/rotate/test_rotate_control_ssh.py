"""The SSH CA inside the real control server (create_app, SQLite store, uvicorn on loopback): a registered
node gets host certificates over its machine-key channel, the admin API signs user certificates, the netmap
carries the CA, and the CA private key stays in the state dir."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshctl.agent.sshcert import SshCertAgentError, request_host_certs
from meshctl.control import ssh_api
from meshctl.control.app import create_app
from meshctl.control.client import ControlClient
from meshctl.control.config import ControlConfig
from meshctl.control.store import Store
from meshctl.keys import ControlPrivateKey, MachinePrivateKey, NodePrivateKey
from meshctl.keys.sshca import CertKind, parse_certificate
from meshctl.wire import HostInfo, MapRequest

pytestmark = pytest.mark.integration


def _pub() -> str:
    return Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


class Server:
    def __init__(self, tmp: Path) -> None:
        self.state = tmp / "control"
        self.key = ControlPrivateKey.generate()
        self.store = Store.open(f"sqlite:///{tmp / 'control.db'}")
        self.app = create_app(ControlConfig(state_dir=self.state), self.store, self.key)
        ssh_api.setup(self.app)  # what create_app should do for the netmap to carry the CA from the start
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "control server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.store.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with Server(tmp_path) as s:
        yield s


async def _register(server: Server, machine: MachinePrivateKey, node: NodePrivateKey) -> Any:
    svc = server.app.state.service
    _, auth = svc.create_auth_key(user=None, reusable=False, ephemeral=False, tags=[], expiry=3600)
    async with ControlClient(server.url, server.key.public_key(), machine) as c:
        return await c.register(node, auth_key=auth, hostinfo=HostInfo(hostname="web-1"))


def test_a_node_cannot_claim_another_hosts_name_in_its_certificate(server: Server) -> None:
    first_m, second_m = MachinePrivateKey.generate(), MachinePrivateKey.generate()

    async def go() -> Any:
        await _register(server, first_m, NodePrivateKey.generate())  # owns the name web-1
        # the second machine reports the same hostname (and keeps reporting it on every request)
        second = await _register(server, second_m, NodePrivateKey.generate())
        reply = await request_host_certs(server.url, server.key.public_key(), second_m, [_pub()])
        return second, reply

    second, reply = asyncio.run(go())
    principals = list(parse_certificate(reply.certificates[0]).principals)
    assert second.node.name != "web-1"
    assert "web-1" not in principals and "web-1.mesh.internal" not in principals
    assert principals[:2] == [second.node.name, f"{second.node.name}.mesh.internal"]


def test_registered_node_gets_host_certificates(server: Server) -> None:
    machine, node = MachinePrivateKey.generate(), NodePrivateKey.generate()
    keys = [_pub()]

    async def go() -> Any:
        with pytest.raises(SshCertAgentError, match="403"):  # not registered yet
            await request_host_certs(server.url, server.key.public_key(), machine, keys)
        result = await _register(server, machine, node)
        reply = await request_host_certs(server.url, server.key.public_key(), machine, keys, validity=600)
        async with ControlClient(server.url, server.key.public_key(), machine) as c:
            first = await c.map_stream(MapRequest(node_key=node.public_key())).__anext__()
        return result, reply, first

    result, reply, first = asyncio.run(go())
    info = parse_certificate(reply.certificates[0])
    addrs = list(result.node.addresses)
    assert info.kind is CertKind.host and info.public_key == keys[0]
    assert list(info.principals) == ["web-1", f"{result.node.name}.mesh.internal",
                                     *[a.split("/")[0] for a in addrs]]
    assert info.validity == 600 + 300  # asked-for validity plus the clock-skew allowance
    ca_line = (server.state / "ssh_ca.pub").read_text().strip()
    assert reply.ca_key == ca_line
    assert first.ssh is not None and first.ssh.user_ca_keys == (ca_line,)
    # the CA private key is a 0600 file in the control state dir and nowhere in what the server sends
    assert stat.S_IMODE(os.stat(server.state / "ssh_ca").st_mode) == 0o600
    private_b64 = "".join((server.state / "ssh_ca").read_text().splitlines()[1:-1])
    assert private_b64[:40] not in str(first) and private_b64[:40] not in str(reply)


def test_admin_api_signs_user_certificates(server: Server) -> None:
    _, api_key = server.app.state.service.create_api_key(3600)
    body = {"user": "alice", "principals": ["root"], "ttl": "2h", "publicKey": _pub()}
    with httpx.Client(base_url=server.url) as http:
        assert http.post("/api/v1/ssh/user-cert", json=body).status_code == 401
        bad = http.post("/api/v1/ssh/user-cert", json=body, headers={"Authorization": "Bearer mskey-api-nope"})
        assert bad.status_code == 401
        r = http.post("/api/v1/ssh/user-cert", json=body, headers={"Authorization": f"Bearer {api_key}"})
        assert r.status_code == 200, r.text
        ca = http.get("/api/v1/ssh/ca").json()
    info = parse_certificate(r.json()["certificate"])
    assert info.kind is CertKind.user and info.principals == ("root",) and info.validity == 2 * 3600 + 300
    assert info.signature_key == " ".join(ca["publicKey"].split()[:2])
    assert ca["knownHosts"].startswith("@cert-authority *.mesh.internal,100.*,fd7a:115c:a1e0:* ssh-ed25519 ")


def test_cli_sign_user_and_known_hosts(server: Server, tmp_path: Path) -> None:
    import subprocess

    from typer.testing import CliRunner

    from meshctl.cli.app import app

    _, api_key = server.app.state.service.create_api_key(3600)
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    env = {"MESHCTL_CONTROL_URL": server.url, "MESHCTL_API_KEY": api_key, "MESHCTL_WORKSPACE": ""}
    runner = CliRunner()
    r = runner.invoke(app, ["ssh", "sign-user", "--user", "alice", "--principal", "root", "--ttl", "30m",
                            str(key) + ".pub"], env=env)
    assert r.exit_code == 0, r.output
    cert = tmp_path / "id_ed25519-cert.pub"
    listing = subprocess.run(["ssh-keygen", "-L", "-f", str(cert)], capture_output=True, text=True, check=True).stdout
    assert "meshctl-user:alice:" in listing and "root" in listing
    r = runner.invoke(app, ["ssh", "known-hosts"], env=env)
    assert r.exit_code == 0, r.output
    ca_pub = (server.state / "ssh_ca.pub").read_text().split()
    assert r.output.strip() == f"@cert-authority *.mesh.internal,100.*,fd7a:115c:a1e0:* {ca_pub[0]} {ca_pub[1]}"
    # a private key given by mistake is refused before anything is sent
    r = runner.invoke(app, ["ssh", "sign-user", "--user", "alice", "--principal", "root", str(key)], env=env)
    assert r.exit_code == 1 and "not an SSH public key line" in r.output
    r = runner.invoke(app, ["ssh", "sign-user", "--user", "alice", "--principal", "root", str(key) + ".pub"],
                      env={**env, "MESHCTL_API_KEY": "mskey-api-000000000000-" + "0" * 64})
    assert r.exit_code == 1 and "401" in r.output


def test_keys_audit_lists_and_flags(server: Server, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from meshctl.cli.app import app

    svc = server.app.state.service
    _, api_key = svc.create_api_key(3600)
    svc.create_api_key(None)  # a key that never expires: flagged
    asyncio.run(_register(server, MachinePrivateKey.generate(), NodePrivateKey.generate()))
    env = {"MESHCTL_CONTROL_URL": server.url, "MESHCTL_API_KEY": api_key, "MESHCTL_WORKSPACE": ""}
    r = CliRunner().invoke(app, ["keys", "audit", "--json"], env=env)
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    kinds = [k["kind"] for k in data["keys"]]
    assert kinds.count("node-key") == 1 and kinds.count("api-key") == 2 and "ssh-ca" in kinds
    assert kinds.count("auth-key") == 1  # the one-off key the node used: listed as inactive
    statuses = {(k["kind"], k["status"]) for k in data["keys"]}
    assert ("api-key", "no-expiry") in statuses and ("auth-key", "inactive") in statuses
    assert data["flagged"] == 1
    assert CliRunner().invoke(app, ["keys", "audit", "--check"], env=env).exit_code == 1
