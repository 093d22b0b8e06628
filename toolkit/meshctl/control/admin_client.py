"""Operator-side client of the admin API (`/api/v1`), used by `meshctl users|nodes|authkeys|apikeys`.

Connection settings resolve in this order: explicit arguments (`--control-url`, `--api-key-file`),
then `$MESHCTL_CONTROL_URL` / `$MESHCTL_API_KEY`, then the workspace (`control.url` in mesh.toml,
`<workspace>/secrets/api-key`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from ..errors import ConfigError
from ..keys import read_secret_file
from ..workspace import find_workspace
from .errors import ControlHTTPError, ControlUnreachableError

__all__ = ["AdminClient", "resolve_connection"]


def resolve_connection(control_url: str | None, api_key_file: Path | None,
                       workspace: Path | None = None) -> tuple[str, str]:
    url = control_url or os.environ.get("MESHCTL_CONTROL_URL")
    key = read_secret_file(api_key_file).decode().strip() if api_key_file else os.environ.get("MESHCTL_API_KEY")
    if not url or not key:
        try:
            ws = find_workspace(workspace)
        except ConfigError:
            ws = None
        if ws is not None:
            url = url or ws.control_url
            if not key and (ws.secrets_dir / "api-key").exists():
                key = read_secret_file(ws.secrets_dir / "api-key").decode().strip()
    if not url:
        raise ConfigError("no control server URL",
                          hint="pass --control-url, set MESHCTL_CONTROL_URL, or use a workspace")
    if not key:
        raise ConfigError("no API key", hint="pass --api-key-file, set MESHCTL_API_KEY, or put it in "
                                             "<workspace>/secrets/api-key (meshctl control admin-key makes one)")
    return url.rstrip("/"), key


class AdminClient:
    def __init__(self, url: str, api_key: str, *, transport: httpx.BaseTransport | None = None,
                 timeout: float = 10.0) -> None:
        self.url = url
        self._http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {api_key}"},
                                  transport=transport, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            resp = self._http.request(method, "/api/v1" + path, json=body)
        except httpx.TransportError as err:
            raise ControlUnreachableError(self.url, str(err) or type(err).__name__) from None
        if resp.status_code >= 400:
            try:
                data = resp.json()
                code, message = str(data.get("code", "error")), str(data.get("error", resp.text))
            except (ValueError, AttributeError):
                code, message = "error", resp.text[:200]
            raise ControlHTTPError(resp.status_code, code, message)
        return resp.json()
