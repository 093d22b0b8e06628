"""Synchronous client for the agent's local API socket (used by `meshctl status|ping|netcheck|rotate`).

Every function returns the decoded JSON dict the daemon answered (shapes in `meshctl.agent.localapi`)
or raises a typed error whose one line says what went wrong and what to do.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import httpx

from ..errors import MeshctlError
from .localapi import DEFAULT_SOCKET_PATH

__all__ = [
    "AgentNotRunningError",
    "AgentPermissionError",
    "AgentRequestError",
    "LocalClientError",
    "PeerNotFoundError",
    "netcheck",
    "ping",
    "rotate_node_key",
    "status",
]


class LocalClientError(MeshctlError):
    """Talking to the local agent failed."""


class AgentNotRunningError(LocalClientError):
    """Nothing listens on the socket."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"the meshctl agent is not running ({path}: {reason})",
                         hint="check it with: systemctl status meshctl-agent")
        self.path = path


class AgentPermissionError(LocalClientError):
    """The socket exists but this user may not open it."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"permission denied on {path}", hint="the local API is root only: run with sudo")
        self.path = path


class AgentRequestError(LocalClientError):
    """The agent answered with an error."""

    def __init__(self, status: int, message: str, hint: str | None, kind: str) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.kind = kind


class PeerNotFoundError(AgentRequestError):
    """The agent does not know the peer asked for."""


def _os_error(err: BaseException) -> OSError | None:
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _request(
    socket_path: Path | str, method: str, path: str, body: dict[str, Any] | None, timeout: float
) -> dict[str, Any]:
    sock = Path(socket_path)
    try:
        os.stat(sock)
    except FileNotFoundError:
        raise AgentNotRunningError(sock, "no such socket") from None
    except PermissionError:
        raise AgentPermissionError(sock) from None
    transport = httpx.HTTPTransport(uds=str(sock))
    try:
        with httpx.Client(transport=transport, base_url="http://meshctl-agent", timeout=timeout) as client:
            response = client.request(method, path, json=body)
    except httpx.TimeoutException:
        raise LocalClientError(f"the agent did not answer {path} within {timeout:.0f} s",
                               hint="check its log: journalctl -u meshctl-agent") from None
    except httpx.TransportError as err:
        cause = _os_error(err)
        if cause is not None and cause.errno in (errno.EACCES, errno.EPERM):
            raise AgentPermissionError(sock) from None
        if cause is not None and cause.errno in (errno.ECONNREFUSED, errno.ENOENT):
            raise AgentNotRunningError(sock, "connection refused") from None
        raise LocalClientError(f"talking to the agent on {sock} failed: {err}") from None
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise LocalClientError(f"the agent answered {path} with HTTP {response.status_code} and no JSON") from None
    if response.status_code != 200:
        if not isinstance(data, dict):
            data = {}
        message = str(data.get("error") or f"HTTP {response.status_code}")
        hint = data.get("hint") if isinstance(data.get("hint"), str) else None
        kind = str(data.get("kind") or "")
        cls = PeerNotFoundError if kind == "PeerNotFoundError" else AgentRequestError
        raise cls(response.status_code, message, hint, kind)
    if not isinstance(data, dict):
        raise LocalClientError(f"the agent answered {path} with a JSON {type(data).__name__}, want an object")
    return data


def status(socket_path: Path | str = DEFAULT_SOCKET_PATH) -> dict[str, Any]:
    """Self and peers as the agent sees them now."""
    return _request(socket_path, "GET", "/v1/status", None, 10.0)


def ping(socket_path: Path | str, peer: str, count: int = 3) -> dict[str, Any]:
    """Disco and ICMP round trips to `peer` (name, FQDN or mesh IP)."""
    return _request(socket_path, "POST", "/v1/ping", {"peer": peer, "count": count}, 15.0 + 6.0 * count)


def netcheck(socket_path: Path | str = DEFAULT_SOCKET_PATH) -> dict[str, Any]:
    """STUN to each DERP region: reflexive address, latency, whether the NAT is hard."""
    return _request(socket_path, "POST", "/v1/netcheck", None, 30.0)


def rotate_node_key(socket_path: Path | str = DEFAULT_SOCKET_PATH) -> dict[str, Any]:
    """Ask the agent to rotate its node key now."""
    return _request(socket_path, "POST", "/v1/rotate-node-key", None, 60.0)
