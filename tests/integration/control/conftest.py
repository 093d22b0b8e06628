"""Fixtures for control-server integration tests: a real PostgreSQL server for the session, and a real
uvicorn control server on loopback (in a thread) per test, parametrized over SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn

from meshctl.control.app import create_app
from meshctl.control.client import ControlClient
from meshctl.control.config import ControlConfig
from meshctl.control.server import ensure_control_key
from meshctl.control.service import ControlService
from meshctl.control.store import Store
from meshctl.keys import ControlPublicKey, MachinePrivateKey, NodePrivateKey
from meshctl.wire import DERPMap, DerpNode, DerpRegion, HostInfo

PG_BIN = Path("/usr/lib/postgresql/15/bin")
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@dataclass
class PostgresServer:
    root: Path
    port: int
    socket_dir: Path

    def url(self, db: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    def create_db(self) -> str:
        name = "t" + uuid.uuid4().hex[:12]
        subprocess.run(_as_postgres([str(PG_BIN / "createdb"), "-h", str(self.socket_dir), "-p", str(self.port),
                                     "-U", "postgres", name]), check=True, capture_output=True)
        return self.url(name)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    if os.geteuid() == 0:
        base = Path(tempfile.mkdtemp(prefix="meshctl-pg-"))
        shutil.chown(base, "postgres", "postgres")
    else:
        base = Path(tempfile.mkdtemp(prefix="meshctl-pg-"))
    data, sock = base / "data", base / "sock"
    for d in (data, sock):
        d.mkdir()
        if os.geteuid() == 0:
            shutil.chown(d, "postgres", "postgres")
    port = free_port()
    subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                                 "--no-sync"]), check=True, capture_output=True)
    log = base / "pg.log"
    subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-o",
                                 f"-c listen_addresses=127.0.0.1 -p {port} -k {sock} -c fsync=off "
                                 f"-c max_connections=200", "start"]), check=True, capture_output=True)
    try:
        yield PostgresServer(base, port, sock)
    finally:
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                       check=False, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'control.db'}"
    pg: PostgresServer = request.getfixturevalue("postgres")
    return pg.create_db()


class Clock:
    """Real time plus an offset the test can advance (shared by server and clients)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class RunningControl:
    url: str
    control_pub: ControlPublicKey
    config: ControlConfig
    db_url: str
    clock: Clock
    service: ControlService
    loop: asyncio.AbstractEventLoop

    def client(self, machine: MachinePrivateKey | None = None, **kw: Any) -> ControlClient:
        c = ControlClient(self.url, self.control_pub, machine or MachinePrivateKey.generate(), clock=self.clock, **kw)
        _OPEN.append(c)
        return c

    def on_server(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the server's event loop thread (the registry is only touched there)."""
        async def call() -> T:
            return fn()
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(10)

    def admin_headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def store(self) -> Store:
        return Store.open(self.db_url, migrate_schema=False)


def derp_map() -> DERPMap:
    node = DerpNode(name="900a", region_id=900, host_name="127.0.0.1", ipv4="127.0.0.1", derp_port=8443,
                    plain_http=True)
    return DERPMap(regions={900: DerpRegion(900, "lab", "Lab", (node,))})


def start_control(tmp_path: Path, db_url: str, **overrides: Any) -> Iterator[RunningControl]:
    state = tmp_path / "state"
    cfg = ControlConfig(state_dir=state, db=db_url, domain="mesh.test", keepalive_interval=2.0,
                        housekeeping_interval=0.2, ephemeral_timeout=1, derp_map=derp_map())
    cfg = replace(cfg, **overrides)
    key = ensure_control_key(state)
    store = Store.open(cfg.db_url)
    clock = Clock()
    app = create_app(cfg, store, key, clock=clock)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                                           timeout_graceful_shutdown=1))
    loop_box: list[asyncio.AbstractEventLoop] = []

    def run() -> None:
        loop = asyncio.new_event_loop()
        loop_box.append(loop)
        loop.run_until_complete(server.serve())
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("control server did not start")
        time.sleep(0.02)
    running = RunningControl(f"http://127.0.0.1:{port}", key.public_key(), cfg, db_url, clock, app.state.service,
                             loop_box[0])
    try:
        yield running
    finally:
        server.should_exit = True
        thread.join(10)
        store.close()


@pytest.fixture
def control(tmp_path: Path, db_url: str) -> Iterator[RunningControl]:
    yield from start_control(tmp_path, db_url)


_OPEN: list[ControlClient] = []


def run(coro: Awaitable[T], timeout: float = 60) -> T:
    """Run a test coroutine; clients made during it are closed on its own loop."""
    async def wrapper() -> T:
        try:
            return await asyncio.wait_for(coro, timeout)
        finally:
            while _OPEN:
                await _OPEN.pop().aclose()
    return asyncio.run(wrapper())


def admin_key(control: RunningControl) -> str:
    s = control.store()
    try:
        return s.create_api_key(None, time.time())[1]
    finally:
        s.close()


def api(control: RunningControl, key: str, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, control.url + path, headers={"Authorization": f"Bearer {key}"}, timeout=10, **kw)


def hostinfo(name: str) -> HostInfo:
    return HostInfo(hostname=name, os="linux", agent_version="test")


def new_node_key() -> NodePrivateKey:
    return NodePrivateKey.generate()
