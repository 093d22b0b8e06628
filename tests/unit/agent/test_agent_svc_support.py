"""Shared by the agent-services tests: a scripted AgentBackend and a local API server in a background loop.

The backend is a fake of the daemon only; the socket, the HTTP server and the client are the real ones.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshctl.agent.localapi import LocalApiServer, PeerNotFoundError, serve_local_api
from meshctl.errors import MeshctlError

NOW = 1_800_000_000.0

STATUS: dict[str, Any] = {
    "self": {
        "name": "alpha", "fqdn": "alpha.corp.mesh", "addresses": ["100.64.0.1/32", "fd7a:115c:a1e0::1/128"],
        "nodeKey": "nodekey:a1b2c3d4", "keyExpiry": NOW + 90 * 86400, "online": True, "controlConnected": True,
        "homeDerp": 900,
    },
    "peers": [
        {"name": "beta", "fqdn": "beta.corp.mesh", "addresses": ["100.64.0.2", "fd7a:115c:a1e0::2"],
         "path": "direct", "endpoint": "192.0.2.10:41641", "lastHandshake": NOW - 12, "rxBytes": 2048,
         "txBytes": 5 * 1024 * 1024, "online": True},
        {"name": "gamma", "fqdn": "gamma.corp.mesh", "addresses": ["100.64.0.3"], "path": "relay(lab)",
         "endpoint": None, "lastHandshake": None, "rxBytes": 0, "txBytes": 0, "online": False},
    ],
}

NETCHECK: dict[str, Any] = {
    "udp": True, "mappingVariesByDestIP": True, "preferredDerp": 900, "globalAddr": "198.51.100.7:41641",
    "regions": [
        {"regionId": 900, "regionCode": "lab", "node": "900a", "stun": "192.0.2.1:3478",
         "reflexive": "198.51.100.7:41641", "latencyMs": 1.5, "error": None},
        {"regionId": 901, "regionCode": "far", "node": "901a", "stun": "192.0.2.2:3478",
         "reflexive": None, "latencyMs": None, "error": "no STUN answer"},
    ],
}


class FakeBackend:
    """Answers from fixed data and records what it was asked."""

    def __init__(self) -> None:
        self.pings: list[tuple[str, int]] = []
        self.rotations = 0
        self.fail_netcheck: BaseException | None = None
        self.lost_pings = False
        self.slow_gate = threading.Event()

    def status(self) -> dict[str, Any]:
        return STATUS

    async def ping(self, peer: str, count: int) -> dict[str, Any]:
        self.pings.append((peer, count))
        if peer == "slow":  # held until the test opens the gate
            while not self.slow_gate.is_set():
                await asyncio.sleep(0.01)
            raise PeerNotFoundError(peer)
        known = {p["name"]: p for p in STATUS["peers"]}
        by_ip = {a: p for p in STATUS["peers"] for a in p["addresses"]}
        found = known.get(peer.split(".")[0]) or by_ip.get(peer)
        if found is None:
            raise PeerNotFoundError(peer)
        results = [{"seq": i, "discoMs": None if self.lost_pings else 0.5 + i,
                    "icmpMs": None if self.lost_pings else 0.7 + i} for i in range(count)]
        return {"peer": found["name"], "address": found["addresses"][0], "path": found["path"],
                "endpoint": found["endpoint"], "sent": count, "results": results}

    async def netcheck(self) -> dict[str, Any]:
        if self.fail_netcheck is not None:
            raise self.fail_netcheck
        return NETCHECK

    async def rotate_node_key(self) -> dict[str, Any]:
        self.rotations += 1
        if self.rotations > 1:
            raise MeshctlError("a rotation is already in progress", hint="wait for it to finish")
        return {"oldNodeKey": "nodekey:a1b2c3d4", "newNodeKey": "nodekey:e5f6a7b8", "keyExpiry": NOW + 180 * 86400}


class ServerThread:
    """A real local API server running in its own event loop thread (the CLI client is synchronous)."""

    def __init__(self, backend: FakeBackend, socket_path: Path) -> None:
        self.backend = backend
        self.socket_path = socket_path
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: LocalApiServer | None = None

    def start(self) -> ServerThread:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(serve_local_api(self.backend, self.socket_path),
                                                       self.loop).result(10)
        return self

    def stop(self) -> None:
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short temp dir: unix socket paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="msvc-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def agent(backend: FakeBackend, short_dir: Path) -> Iterator[ServerThread]:
    server = ServerThread(backend, short_dir / "run" / "agent.sock").start()
    try:
        yield server
    finally:
        server.stop()
