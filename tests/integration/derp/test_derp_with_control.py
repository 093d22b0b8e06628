"""Admission against the real coordination server (uvicorn on loopback, SQLite): a node registered with
the control server gets onto the relay, an unregistered key is refused, and a wrong DERP token refuses all."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from meshctl.control.app import create_app
from meshctl.control.client import ControlClient
from meshctl.control.config import ControlConfig
from meshctl.control.server import ensure_control_key
from meshctl.control.store import Store
from meshctl.derp.admission import AdmissionVerifier
from meshctl.derp.client import DerpClient
from meshctl.derp.errors import AdmissionDeniedError
from meshctl.keys import ControlPublicKey, MachinePrivateKey, NodePrivateKey
from meshctl.wire import HostInfo

from .derp_helpers import client, pub, recv_packet, relay, run

pytestmark = pytest.mark.integration


@dataclass
class Control:
    url: str
    control_pub: ControlPublicKey
    db_url: str

    def store(self) -> Store:
        return Store.open(self.db_url, migrate_schema=False)


@pytest.fixture
def control(tmp_path: Path) -> Iterator[Control]:
    state = tmp_path / "state"
    cfg = ControlConfig(state_dir=state, db=f"sqlite:///{tmp_path / 'control.db'}", domain="mesh.test")
    key = ensure_control_key(state)
    store = Store.open(cfg.db_url)
    app = create_app(cfg, store, key)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.time() + 15
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "control server did not start"
        time.sleep(0.02)
    try:
        yield Control(f"http://127.0.0.1:{port}", key.public_key(), cfg.db_url)
    finally:
        server.should_exit = True
        thread.join(10)
        store.close()


def _tokens(control: Control) -> tuple[str, str]:
    """(an auth key for registering nodes, a DERP admission token)."""
    s = control.store()
    try:
        api_key = s.create_api_key(None, time.time())[1]
        derp_token = s.create_derp_token(time.time())
    finally:
        s.close()
    r = httpx.post(control.url + "/api/v1/authkeys", json={"reusable": True},
                   headers={"Authorization": f"Bearer {api_key}"}, timeout=10)
    assert r.status_code == 201, r.text
    return str(r.json()["key"]), derp_token


def test_registered_nodes_relay_and_an_unregistered_key_is_refused(control: Control) -> None:
    auth_key, derp_token = _tokens(control)
    n1, n2, stranger = NodePrivateKey.generate(), NodePrivateKey.generate(), NodePrivateKey.generate()

    async def body() -> None:
        for i, nk in enumerate((n1, n2)):
            async with ControlClient(control.url, control.control_pub, MachinePrivateKey.generate()) as cc:
                res = await cc.register(nk, auth_key=auth_key, hostinfo=HostInfo(hostname=f"n{i}", os="linux",
                                                                                agent_version="test"))
                assert res.machine_authorized
        verifier = AdmissionVerifier(control.url + "/derp/verify", derp_token)
        async with relay(verifier=verifier) as (server, url), client(url, n1) as a, client(url, n2) as b:
            await a.send(pub(b), b"admitted by control")
            assert (await recv_packet(b)).data == b"admitted by control"
            with pytest.raises(AdmissionDeniedError, match="node key not admitted"):
                await DerpClient(url, stranger).connect()
            assert server.stats.refused["not_admitted"] == 1
    run(body)


def test_wrong_derp_token_refuses_everyone(control: Control) -> None:
    auth_key, _ = _tokens(control)
    nk = NodePrivateKey.generate()

    async def body() -> None:
        async with ControlClient(control.url, control.control_pub, MachinePrivateKey.generate()) as cc:
            await cc.register(nk, auth_key=auth_key, hostinfo=HostInfo(hostname="n", os="linux", agent_version="t"))
        bad = AdmissionVerifier(control.url + "/derp/verify", "mskey-derp-000000000000-" + "0" * 64)
        async with relay(verifier=bad) as (_, url):
            with pytest.raises(AdmissionDeniedError):
                await DerpClient(url, nk).connect()  # 401 from control: fail closed
    run(body)
