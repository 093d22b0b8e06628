"""The control server's SSH endpoints, in-process: machine-key authentication, admin check, bad input."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from meshctl.agent.sshcert import SshCertAgentError, request_host_certs
from meshctl.control.sealing import RequestOpener, seal_request
from meshctl.control.ssh_api import SshNodeIdentity, configure_ssh, router
from meshctl.keys import ControlPrivateKey, MachinePrivateKey, MachinePublicKey
from meshctl.keys.sshca import CertKind, parse_certificate

NOW = 1_800_000_000.0
ADMIN = "Bearer good-key"


def _pub() -> str:
    return Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


class Mesh:
    def __init__(self, tmp: Path) -> None:
        self.control = ControlPrivateKey.generate()
        self.machine = MachinePrivateKey.generate()
        self.nodes: dict[bytes, SshNodeIdentity] = {
            self.machine.public_key().raw: SshNodeIdentity("n1", "n1", ("100.64.0.5", "fd7a:115c:a1e0::5")),
        }
        self.app = FastAPI()
        self.app.include_router(router)

        def lookup(m: MachinePublicKey) -> SshNodeIdentity | None:
            return self.nodes.get(m.raw)

        def admin(request: Request) -> Any:
            if request.headers.get("authorization") != ADMIN:
                return JSONResponse({"code": "unauthorized", "error": "missing or wrong API key"}, status_code=401)
            return None

        self.settings = configure_ssh(self.app, state_dir=tmp / "control", opener=RequestOpener(self.control),
                                      lookup_node=lookup, require_admin=admin, domain="mesh.internal",
                                      prefixes=("100.64.0.0/10",), clock=lambda: NOW)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://control")

    def host_certs(self, keys: list[str], **kw: Any) -> Any:
        return asyncio.run(request_host_certs("http://control", self.control.public_key(), self.machine, keys,
                                              clock=lambda: NOW, transport=httpx.ASGITransport(app=self.app), **kw))

    def post(self, path: str, **kw: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            async with self.client() as c:
                return await c.post(path, **kw)
        return asyncio.run(go())

    def get(self, path: str) -> httpx.Response:
        async def go() -> httpx.Response:
            async with self.client() as c:
                return await c.get(path)
        return asyncio.run(go())


@pytest.fixture
def mesh(tmp_path: Path) -> Mesh:
    return Mesh(tmp_path)


def test_host_cert_for_registered_node(mesh: Mesh) -> None:
    keys = [_pub(), _pub()]
    reply = mesh.host_certs(keys, validity=3600)
    assert reply.principals == ("n1", "n1.mesh.internal", "100.64.0.5", "fd7a:115c:a1e0::5")
    assert reply.ca_key == mesh.settings.ca.public_line()
    for key, cert in zip(keys, reply.certificates, strict=True):
        info = parse_certificate(cert)
        assert info.kind is CertKind.host and info.public_key == key
        assert info.valid_before == NOW + 3600 == reply.valid_before
        assert info.key_id.startswith("meshctl-host:n1:")
    assert mesh.settings.signed["host"] == 2


def test_unknown_machine_is_refused(mesh: Mesh) -> None:
    mesh.nodes.clear()
    with pytest.raises(SshCertAgentError, match="403 unknown_node"):
        mesh.host_certs([_pub()])


@pytest.mark.parametrize(("node", "code"), [(SshNodeIdentity("n1", "n1", (), authorized=False), "not_authorized"),
                                            (SshNodeIdentity("n1", "n1", (), expired=True), "node_key_expired")])
def test_unauthorized_or_expired_node_is_refused(mesh: Mesh, node: SshNodeIdentity, code: str) -> None:
    mesh.nodes[mesh.machine.public_key().raw] = node
    with pytest.raises(SshCertAgentError, match=code):
        mesh.host_certs([_pub()])


@pytest.mark.parametrize(
    ("keys", "validity", "code"),
    [([], None, "bad_host_keys"), (["ssh-ed25519 garbage"], None, "bad_host_keys"),
     ([_pub()] * 9, None, "bad_host_keys"), ([_pub()], 10, "bad_validity"), ([_pub()], 31 * 86400, "bad_validity")],
)
def test_bad_host_cert_requests(mesh: Mesh, keys: list[str], validity: int | None, code: str) -> None:
    with pytest.raises(SshCertAgentError, match=code):
        mesh.host_certs(keys, validity=validity)
    assert mesh.settings.signed["host"] == 0


def test_unsealed_or_replayed_requests_are_refused(mesh: Mesh) -> None:
    r = mesh.post("/machine/ssh/host-cert", content=b"x" * 40)
    assert r.status_code == 400 and r.json()["code"] == "missing_machine_header"
    headers, body = seal_request(mesh.machine, mesh.control.public_key(), {"hostKeys": [_pub()]}, NOW)
    assert mesh.post("/machine/ssh/host-cert", headers=headers, content=body).status_code == 200
    again = mesh.post("/machine/ssh/host-cert", headers=headers, content=body)
    assert again.status_code == 400 and again.json()["code"] == "replayed"
    other = ControlPrivateKey.generate().public_key()
    headers, body = seal_request(mesh.machine, other, {"hostKeys": [_pub()]}, NOW)
    assert mesh.post("/machine/ssh/host-cert", headers=headers, content=body).json()["code"] == "bad_box"


def test_user_cert_needs_admin_key(mesh: Mesh) -> None:
    body = {"user": "alice", "principals": ["root"], "ttl": "8h", "publicKey": _pub()}
    assert mesh.post("/api/v1/ssh/user-cert", json=body).status_code == 401
    assert mesh.settings.signed["user"] == 0
    r = mesh.post("/api/v1/ssh/user-cert", json=body, headers={"Authorization": ADMIN})
    assert r.status_code == 200
    info = parse_certificate(r.json()["certificate"])
    assert info.kind is CertKind.user and info.principals == ("root",)
    assert info.valid_before == NOW + 8 * 3600 == r.json()["validBefore"]
    assert r.json()["keyId"] == info.key_id and info.key_id.startswith("meshctl-user:alice:")


@pytest.mark.parametrize(
    ("change", "code"),
    [({"user": ""}, "bad_user"), ({"principals": []}, "bad_principals"), ({"publicKey": 5}, "bad_public_key"),
     ({"ttl": "forever"}, "bad_ttl"), ({"ttl": "30d"}, "bad_request"), ({"publicKey": "ssh-rsa xx"}, "bad_request")],
)
def test_bad_user_cert_requests(mesh: Mesh, change: dict[str, Any], code: str) -> None:
    body = {"user": "alice", "principals": ["root"], "ttl": "8h", "publicKey": _pub(), **change}
    r = mesh.post("/api/v1/ssh/user-cert", json=body, headers={"Authorization": ADMIN})
    assert r.status_code == 400 and r.json()["code"] == code


def test_ca_endpoint_gives_known_hosts_line(mesh: Mesh) -> None:
    r = mesh.get("/api/v1/ssh/ca")
    assert r.status_code == 200
    line = mesh.settings.ca.public_line()
    assert r.json()["publicKey"] == line
    assert r.json()["knownHosts"] == "@cert-authority *.mesh.internal,100.* " + " ".join(line.split()[:2])


def test_unconfigured_router_answers_503() -> None:
    app = FastAPI()
    app.include_router(router)

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c") as c:
            return await c.get("/api/v1/ssh/ca")
    r = asyncio.run(go())
    assert r.status_code == 503 and r.json()["code"] == "ssh_not_configured"
