"""The local API over a real unix socket: requests, errors, socket permissions, stale sockets, the client."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from meshctl.agent import localclient
from meshctl.agent.localapi import LocalApiError, SocketInUseError, serve_local_api

from .test_agent_svc_support import NETCHECK, STATUS, FakeBackend, ServerThread, agent, backend, short_dir

__all__ = ["agent", "backend", "short_dir"]  # fixtures


def raw_http(path: Path, request: bytes) -> tuple[int, dict[str, object]]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def test_status_round_trip(agent: ServerThread) -> None:
    assert localclient.status(agent.socket_path) == STATUS


def test_ping_passes_peer_and_count(agent: ServerThread, backend: FakeBackend) -> None:
    result = localclient.ping(agent.socket_path, "beta.corp.mesh", 2)
    assert backend.pings == [("beta.corp.mesh", 2)]
    assert result["path"] == "direct"
    assert [r["seq"] for r in result["results"]] == [0, 1]


def test_unknown_peer_is_a_typed_error_with_a_hint(agent: ServerThread) -> None:
    with pytest.raises(localclient.PeerNotFoundError) as caught:
        localclient.ping(agent.socket_path, "nobody", 1)
    assert str(caught.value) == "no peer 'nobody' in this node's netmap"
    assert caught.value.hint == "list peers with: meshctl status"
    assert caught.value.status == 404


def test_bad_count_is_refused_before_reaching_the_backend(agent: ServerThread, backend: FakeBackend) -> None:
    with pytest.raises(localclient.AgentRequestError, match="'count' must be an integer from 1 to 100, got 0"):
        localclient.ping(agent.socket_path, "beta", 0)
    assert backend.pings == []


def test_backend_refusal_keeps_message_and_hint(agent: ServerThread) -> None:
    assert localclient.rotate_node_key(agent.socket_path)["newNodeKey"] == "nodekey:e5f6a7b8"
    with pytest.raises(localclient.AgentRequestError) as caught:
        localclient.rotate_node_key(agent.socket_path)
    assert (str(caught.value), caught.value.hint, caught.value.status) == (
        "a rotation is already in progress", "wait for it to finish", 409)


def test_backend_bug_is_a_500_without_internals_and_the_server_keeps_serving(
    agent: ServerThread, backend: FakeBackend
) -> None:
    backend.fail_netcheck = RuntimeError("secret internal detail")
    with pytest.raises(localclient.AgentRequestError) as caught:
        localclient.netcheck(agent.socket_path)
    assert caught.value.status == 500
    assert "secret" not in str(caught.value)
    backend.fail_netcheck = None
    assert localclient.netcheck(agent.socket_path) == NETCHECK


def test_malformed_requests_get_json_errors(agent: ServerThread) -> None:
    assert raw_http(agent.socket_path, b"garbage\r\n\r\n") == (
        400, {"error": "malformed request line 'garbage'", "hint": None, "kind": "LocalApiError"})
    status, body = raw_http(agent.socket_path, b"GET /v2/nothing HTTP/1.1\r\n\r\n")
    assert (status, body["error"]) == (404, "no endpoint '/v2/nothing'")
    status, body = raw_http(agent.socket_path, b"POST /v1/status HTTP/1.1\r\n\r\n")
    assert (status, body["error"]) == (405, "/v1/status wants GET, got POST")
    status, body = raw_http(agent.socket_path, b"POST /v1/ping HTTP/1.1\r\nContent-Length: 5\r\n\r\n[1,2]")
    assert (status, body["error"]) == (400, "body must be a JSON object, found list")
    status, body = raw_http(agent.socket_path, b"POST /v1/ping HTTP/1.1\r\nContent-Length: 999999\r\n\r\n")
    assert status == 413
    assert localclient.status(agent.socket_path) == STATUS


def test_socket_is_root_only(agent: ServerThread) -> None:
    assert stat.S_IMODE(os.stat(agent.socket_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(agent.socket_path.parent).st_mode) == 0o700
    assert os.stat(agent.socket_path).st_uid == os.getuid()


def test_socket_is_removed_on_stop(backend: FakeBackend, short_dir: Path) -> None:
    server = ServerThread(backend, short_dir / "agent.sock").start()
    assert server.socket_path.exists()
    server.stop()
    assert not server.socket_path.exists()
    with pytest.raises(localclient.AgentNotRunningError) as caught:
        localclient.status(server.socket_path)
    assert caught.value.hint == "check it with: systemctl status meshctl-agent"


def test_stale_socket_from_a_crash_is_replaced(backend: FakeBackend, short_dir: Path) -> None:
    path = short_dir / "agent.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays behind, nobody listens: what a SIGKILLed agent leaves
    with pytest.raises(localclient.AgentNotRunningError, match="connection refused"):
        localclient.status(path)
    server = ServerThread(backend, path).start()
    try:
        assert localclient.status(path) == STATUS
    finally:
        server.stop()


def test_a_live_socket_is_not_stolen(agent: ServerThread, backend: FakeBackend) -> None:
    async def second() -> None:
        await serve_local_api(backend, agent.socket_path)

    with pytest.raises(SocketInUseError, match="already served by a running agent"):
        asyncio.run(second())
    assert localclient.status(agent.socket_path) == STATUS


def test_a_regular_file_at_the_socket_path_is_left_alone(backend: FakeBackend, short_dir: Path) -> None:
    path = short_dir / "agent.sock"
    path.write_text("precious")
    with pytest.raises(LocalApiError, match="exists and is not a socket"):
        asyncio.run(serve_local_api(backend, path))
    assert path.read_text() == "precious"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_other_users_get_permission_denied_in_one_line(agent: ServerThread) -> None:
    # A forked child drops to nobody (the venv's python may not be executable by nobody, so no exec).
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        line = "no error"
        try:
            os.setgid(65534)
            os.setuid(65534)
            localclient.status(agent.socket_path)
        except localclient.AgentPermissionError as err:
            line = f"{err} | {err.hint}"
        except BaseException as err:
            line = f"{type(err).__name__}: {err}"
        os.write(write_end, line.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        line = pipe.read()
    os.waitpid(pid, 0)
    assert line == f"permission denied on {agent.socket_path} | the local API is root only: run with sudo"


def test_a_long_ping_does_not_hold_up_status(agent: ServerThread, backend: FakeBackend) -> None:
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(localclient.ping, agent.socket_path, "slow", 1)
        while not backend.pings:  # the ping has reached the backend and is now held there
            time.sleep(0.01)
        assert localclient.status(agent.socket_path) == STATUS
        assert not slow.done()
        backend.slow_gate.set()
        with pytest.raises(localclient.PeerNotFoundError):
            slow.result(10)


def test_an_existing_shared_directory_is_left_as_it_is(backend: FakeBackend, short_dir: Path) -> None:
    shared = short_dir / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # like /tmp: the agent must not make it 0700
    server = ServerThread(backend, shared / "agent.sock").start()
    try:
        assert stat.S_IMODE(os.stat(shared).st_mode) == 0o1777
        assert stat.S_IMODE(os.stat(server.socket_path).st_mode) == 0o600
    finally:
        server.stop()


def test_an_unusable_socket_path_is_a_typed_error(backend: FakeBackend, short_dir: Path) -> None:
    too_long = short_dir / ("d" * 100) / "agent.sock"
    with pytest.raises(LocalApiError, match=r"cannot serve the local API on .*: AF_UNIX path too long"):
        asyncio.run(serve_local_api(backend, too_long))
