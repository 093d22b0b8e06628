"""The calls rotation and SSH commands make to the control server's admin API (on top of control's
`AdminClient`, whose settings resolution they share: `--control-url`/`$MESHCTL_CONTROL_URL`/workspace URL,
`--api-key-file`/`$MESHCTL_API_KEY`/`<workspace>/secrets/api-key`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from ..control.admin_client import AdminClient, resolve_connection
from ..control.errors import ControlHTTPError, ControlUnreachableError
from ..errors import ConfigError
from ..workspace import find_workspace
from .errors import RotateError

__all__ = ["admin_client", "control_url", "list_items", "sign_user_cert", "ssh_ca"]


def admin_client(control_url: str | None, api_key_file: Path | None, workspace: Path | None) -> AdminClient:
    url, key = resolve_connection(control_url, api_key_file, workspace)
    return AdminClient(url, key)


def control_url(explicit: str | None, workspace: Path | None) -> str:
    """The control URL alone (for public endpoints that need no API key)."""
    url = explicit or os.environ.get("MESHCTL_CONTROL_URL")
    if not url:
        try:
            url = find_workspace(workspace).control_url
        except ConfigError:
            url = ""
    if not url:
        raise ConfigError("no control server URL", hint="pass --control-url, set MESHCTL_CONTROL_URL, "
                                                        "or use a workspace")
    return url.rstrip("/")


def sign_user_cert(client: AdminClient, public_key: str, *, user: str, principals: list[str],
                   ttl: str | int) -> dict[str, Any]:
    body = {"user": user, "principals": principals, "ttl": ttl, "publicKey": public_key}
    result: dict[str, Any] = client.call("POST", "/ssh/user-cert", body)
    return result


def ssh_ca(url: str, *, transport: httpx.BaseTransport | None = None) -> dict[str, Any]:
    """`GET /api/v1/ssh/ca`: the CA public key and known-hosts line (no API key needed)."""
    try:
        with httpx.Client(base_url=url, transport=transport, timeout=10.0) as http:
            resp = http.get("/api/v1/ssh/ca")
    except httpx.TransportError as err:
        raise ControlUnreachableError(url, str(err) or type(err).__name__) from None
    if resp.status_code != 200:
        try:
            data = resp.json()
            code, message = str(data.get("code", "error")), str(data.get("error", resp.text))
        except (ValueError, AttributeError):
            code, message = "error", resp.text[:200]
        raise ControlHTTPError(resp.status_code, code, message)
    result: dict[str, Any] = resp.json()
    return result


def list_items(client: AdminClient, what: str) -> list[dict[str, Any]]:
    """`nodes`, `authkeys` or `apikeys`."""
    result = client.call("GET", f"/{what}")
    if not isinstance(result, list):
        raise RotateError(f"list {what}: control server sent {type(result).__name__}, want a list")
    return result
