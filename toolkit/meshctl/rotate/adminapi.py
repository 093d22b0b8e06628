"""The slice of the control server's admin API that rotation and SSH commands use (httpx, Bearer API key).

Settings are found like every operator command: `--control-url` / `$MESHCTL_CONTROL_URL` / the workspace's
`[control] url`, and the API key from `--api-key-file` / `$MESHCTL_API_KEY` / `<workspace>/secrets/api-key`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ..errors import ConfigError
from ..keys import read_secret_file
from ..workspace import Workspace
from .errors import RotateError

__all__ = ["AdminApi", "AdminApiError", "admin_settings"]

API_KEY_FILE = "api-key"


class AdminApiError(RotateError):
    """The control server refused or failed an admin API call."""

    def __init__(self, what: str, status: int, code: str, message: str) -> None:
        super().__init__(f"{what}: control server answered {status} {code}: {message}",
                         hint="check --api-key-file / $MESHCTL_API_KEY" if status == 401 else None)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class AdminSettings:
    url: str
    api_key: str | None


def admin_settings(workspace: Workspace | None, control_url: str | None = None,
                   api_key_file: Path | None = None, *, need_key: bool = True) -> AdminSettings:
    url = control_url or os.environ.get("MESHCTL_CONTROL_URL") or (workspace.control_url if workspace else "")
    if not url:
        raise ConfigError("no control server URL", hint="pass --control-url, set MESHCTL_CONTROL_URL, "
                                                        "or set [control] url in mesh.toml")
    key: str | None = None
    if api_key_file is not None:
        key = read_secret_file(api_key_file).decode().strip()
    elif os.environ.get("MESHCTL_API_KEY"):
        key = os.environ["MESHCTL_API_KEY"].strip()
    elif workspace is not None and (workspace.secrets_dir / API_KEY_FILE).exists():
        key = read_secret_file(workspace.secrets_dir / API_KEY_FILE).decode().strip()
    if need_key and not key:
        raise ConfigError("no admin API key", hint="pass --api-key-file, set MESHCTL_API_KEY, or put it in "
                                                   f"<workspace>/secrets/{API_KEY_FILE} (0600)")
    return AdminSettings(url.rstrip("/"), key)


class AdminApi:
    def __init__(self, settings: AdminSettings, *, transport: httpx.BaseTransport | None = None,
                 timeout: float = 15.0) -> None:
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self.url = settings.url
        self._http = httpx.Client(base_url=settings.url, headers=headers, transport=transport, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AdminApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, what: str, method: str, path: str, **kw: Any) -> Any:
        try:
            resp = self._http.request(method, path, **kw)
        except httpx.TransportError as err:
            raise RotateError(f"{what}: cannot reach control server at {self.url}: {err or type(err).__name__}",
                              hint="check the control URL and that meshctl-control is running") from None
        if resp.status_code >= 400:
            try:
                body = resp.json()
                code, message = str(body.get("code", "error")), str(body.get("error", resp.reason_phrase))
            except (ValueError, AttributeError):
                code, message = "error", resp.text[:200]
            raise AdminApiError(what, resp.status_code, code, message)
        return resp.json()

    def sign_user_cert(self, public_key: str, *, user: str, principals: list[str], ttl: str | int) -> dict[str, Any]:
        body = {"user": user, "principals": principals, "ttl": ttl, "publicKey": public_key}
        result: dict[str, Any] = self._call("sign user certificate", "POST", "/api/v1/ssh/user-cert", json=body)
        return result

    def ssh_ca(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("get SSH CA", "GET", "/api/v1/ssh/ca")
        return result

    def list(self, what: str) -> list[dict[str, Any]]:
        """`nodes`, `authkeys` or `apikeys`."""
        result = self._call(f"list {what}", "GET", f"/api/v1/{what}")
        if not isinstance(result, list):
            raise RotateError(f"list {what}: control server sent {type(result).__name__}, want a list")
        return result
