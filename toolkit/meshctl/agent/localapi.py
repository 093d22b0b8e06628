"""The agent's local API: HTTP/JSON over the root-only unix socket `/run/meshctl/agent.sock`.

The daemon implements `AgentBackend` and calls `serve_local_api(backend, socket_path)` inside its
own asyncio loop; `meshctl status|ping|netcheck` and `meshctl rotate node-key` talk to it through
`meshctl.agent.localclient`. The server is a deliberately small HTTP/1.1 subset (one request per
connection, `Content-Length` bodies, `Connection: close`): the socket is local, root-only and its
only clients are ours, so a full web framework would add signal handling and threads to the
daemon for nothing.

Endpoints (all answer JSON):

    GET  /v1/status             -> AgentBackend.status()
    POST /v1/ping               {"peer": str, "count": int} -> AgentBackend.ping(peer, count)
    POST /v1/netcheck           -> AgentBackend.netcheck()
    POST /v1/rotate-node-key    -> AgentBackend.rotate_node_key()

A failure answers `{"error": "<one line>", "hint": "<what to do>" | null, "kind": "<error class>"}`
with 400 (bad request), 404 (unknown peer or endpoint), 405, 409 (the backend refused with a
`MeshctlError`) or 500 (a bug: the message is generic, the traceback goes to the daemon's log).

Result shapes (what the daemon returns; the CLI renders them, tolerating missing keys):

    status:   {"self": {"name", "fqdn", "addresses": [str], "nodeKey": "<short>", "keyExpiry": unix s | null,
                        "online": bool, "controlConnected": bool, "homeDerp": int | null},
               "peers": [{"name", "fqdn", "addresses": [str], "path": "direct" | "relay(<region>)",
                          "endpoint": "ip:port" | null, "lastHandshake": unix s | null,
                          "rxBytes": int, "txBytes": int, "online": bool}]}
    ping:     {"peer": name, "address": mesh IP, "path": ..., "endpoint": ..., "sent": int,
               "results": [{"seq": int, "discoMs": float | null, "icmpMs": float | null}]}
    netcheck: see meshctl.agent.netcheck.NetcheckReport.to_json()
    rotate:   {"oldNodeKey": "<short>", "newNodeKey": "<short>", "keyExpiry": unix s | null}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import MeshctlError

__all__ = [
    "DEFAULT_SOCKET_PATH",
    "MAX_PING_COUNT",
    "AgentBackend",
    "LocalApiError",
    "LocalApiServer",
    "PeerNotFoundError",
    "SocketInUseError",
    "serve_local_api",
]

log = logging.getLogger(__name__)

DEFAULT_SOCKET_PATH = Path("/run/meshctl/agent.sock")
MAX_PING_COUNT = 100
_MAX_HEAD = 16 * 1024
_MAX_BODY = 64 * 1024
_READ_TIMEOUT = 10.0


class AgentBackend(Protocol):
    """What the daemon offers the local API. Methods raise `MeshctlError` subclasses to refuse."""

    def status(self) -> dict[str, Any]:
        """Self and peers, as in the module docstring."""
        ...

    async def ping(self, peer: str, count: int) -> dict[str, Any]:
        """Disco and ICMP round trips to `peer` (name, FQDN or mesh IP); `PeerNotFoundError` if unknown."""
        ...

    async def netcheck(self) -> dict[str, Any]:
        """STUN to every DERP region from the disco socket: reflexive address, latency, hard NAT."""
        ...

    async def rotate_node_key(self) -> dict[str, Any]:
        """Generate a new node key, register it with proof of the old one, apply it."""
        ...


class LocalApiError(MeshctlError):
    """The local API could not be started or served."""


class SocketInUseError(LocalApiError):
    """Another live process already serves the socket path."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"{path} is already served by a running agent",
            hint="stop it first: systemctl stop meshctl-agent",
        )
        self.path = path


class PeerNotFoundError(MeshctlError):
    """A peer named in a request is not in the netmap (raised by the backend, answered with 404)."""

    def __init__(self, peer: str) -> None:
        super().__init__(f"no peer {peer!r} in this node's netmap", hint="list peers with: meshctl status")
        self.peer = peer


@dataclass
class _Reply:
    status: int
    body: dict[str, Any]


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
            413: "Payload Too Large", 500: "Internal Server Error"}


def _error(status: int, message: str, hint: str | None = None, kind: str = "LocalApiError") -> _Reply:
    return _Reply(status, {"error": message, "hint": hint, "kind": kind})


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as err:
        raise _BadRequest(413, "request head too large") from err
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(400, f"malformed request line {lines[0][:80]!r}")
    method, target = parts[0], parts[1]
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            try:
                length = int(value.strip())
            except ValueError as err:
                raise _BadRequest(400, f"bad Content-Length {value.strip()!r}") from err
    if length < 0 or length > _MAX_BODY:
        raise _BadRequest(413, f"body of {length} bytes is over the {_MAX_BODY}-byte limit")
    body = await reader.readexactly(length) if length else b""
    return method, target.split("?", 1)[0], body


def _json_body(body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _BadRequest(400, f"body is not JSON: {err}") from err
    if not isinstance(data, dict):
        raise _BadRequest(400, f"body must be a JSON object, found {type(data).__name__}")
    return data


class LocalApiServer:
    """A running local API; `await close()` stops it and removes its socket."""

    def __init__(self, backend: AgentBackend, socket_path: Path) -> None:
        self.backend = backend
        self.socket_path = socket_path
        self._server: asyncio.AbstractServer | None = None
        self._inode: int | None = None

    async def start(self) -> None:
        path = self.socket_path
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True)
            os.chmod(path.parent, 0o700)  # whatever the umask; an existing directory (/tmp…) is never changed
        await _clear_stale_socket(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Bound under a temporary name, made 0600, then renamed into place: the socket never appears
        # at its path with the looser mode the umask gave it.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            sock.bind(str(tmp))
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except OSError as err:
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise LocalApiError(f"cannot serve the local API on {path}: {err.strerror or err}",
                                hint="use a path under 100 bytes in a directory root can write") from None
        self._inode = os.stat(path).st_ino
        self._server = await asyncio.start_unix_server(self._handle, sock=sock, limit=_MAX_HEAD)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            # Remove only our own socket: a successor may already have bound the path.
            if os.stat(self.socket_path).st_ino == self._inode:
                os.unlink(self.socket_path)

    async def __aenter__(self) -> LocalApiServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                method, path, body = await asyncio.wait_for(_read_request(reader), _READ_TIMEOUT)
                reply = await self._dispatch(method, path, body)
            except _BadRequest as err:
                reply = _error(err.status, str(err))
            except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                return
            await _write_reply(writer, reply)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _dispatch(self, method: str, path: str, body: bytes) -> _Reply:
        routes = {"/v1/status": "GET", "/v1/ping": "POST", "/v1/netcheck": "POST", "/v1/rotate-node-key": "POST"}
        if path not in routes:
            return _error(404, f"no endpoint {path!r}")
        if method != routes[path]:
            return _error(405, f"{path} wants {routes[path]}, got {method}")
        try:
            if path == "/v1/status":
                return _Reply(200, self.backend.status())
            if path == "/v1/ping":
                peer, count = _ping_args(_json_body(body))
                return _Reply(200, await self.backend.ping(peer, count))
            if path == "/v1/netcheck":
                return _Reply(200, await self.backend.netcheck())
            return _Reply(200, await self.backend.rotate_node_key())
        except _BadRequest:
            raise
        except PeerNotFoundError as err:
            return _error(404, str(err), err.hint, type(err).__name__)
        except MeshctlError as err:
            return _error(409, str(err), err.hint, type(err).__name__)
        except Exception:
            log.exception("local API %s %s failed", method, path)
            return _error(500, f"the agent failed while serving {path}", "see the agent's log: journalctl -u "
                          "meshctl-agent", "InternalError")


def _ping_args(data: dict[str, Any]) -> tuple[str, int]:
    peer = data.get("peer")
    count = data.get("count", 1)
    if not isinstance(peer, str) or not peer.strip():
        raise _BadRequest(400, "ping wants a non-empty string 'peer'")
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_PING_COUNT:
        raise _BadRequest(400, f"ping 'count' must be an integer from 1 to {MAX_PING_COUNT}, got {count!r}")
    return peer.strip(), count


async def _write_reply(writer: asyncio.StreamWriter, reply: _Reply) -> None:
    payload = json.dumps(reply.body, default=str).encode()
    head = (
        f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Error')}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode() + payload)
    with contextlib.suppress(ConnectionError):
        await writer.drain()


async def _clear_stale_socket(path: Path) -> None:
    """Remove a socket left by a crashed agent; refuse if a live one answers or the path is no socket."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise LocalApiError(f"{path} exists and is not a socket", hint="move it away; the agent will not delete it")
    try:
        _reader, writer = await asyncio.open_unix_connection(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)
        return
    writer.close()
    raise SocketInUseError(path)


async def serve_local_api(backend: AgentBackend, socket_path: Path = DEFAULT_SOCKET_PATH) -> LocalApiServer:
    """Start serving `backend` on `socket_path` in the running loop; returns the handle to close it."""
    server = LocalApiServer(backend, Path(socket_path))
    await server.start()
    return server
