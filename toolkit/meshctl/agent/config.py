"""The agent's configuration: `/etc/meshctl/agent.toml` (TOML), every field checked at load time.

    control_url   = "http://control.example:8080"      # required
    control_key   = "ctrlkey:…"                        # required: pinned, no trust on first use
    state_dir     = "/var/lib/meshctl/agent"
    auth_key_file = "/etc/meshctl/authkey"             # consumed once, deleted after registration
    interface     = "mesh0"
    port          = 41641                              # WireGuard; disco uses port + 1
    backend       = "auto"                             # auto | kernel | userspace
    socket        = "/run/meshctl/agent.sock"
    derp_home     = 900                                # optional: pin the home DERP region
    hostname      = "web1"                             # optional: defaults to the host name
    magic_dns     = true                               # serve 100.100.100.100 and point the host at it
    packet_filter = true                               # enforce the netmap's packetFilter with nftables
"""

from __future__ import annotations

import socket as _socket
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..keys import ControlPublicKey, KeysError
from .errors import AgentConfigError
from .wgbackend import Backend

__all__ = ["DEFAULT_CONFIG_PATH", "AgentConfig", "load_config", "parse_config"]

DEFAULT_CONFIG_PATH = Path("/etc/meshctl/agent.toml")
_KNOWN = {"control_url", "control_key", "state_dir", "auth_key_file", "interface", "port", "backend", "socket",
          "derp_home", "hostname", "magic_dns", "packet_filter"}


@dataclass(frozen=True)
class AgentConfig:
    control_url: str
    control_key: ControlPublicKey
    state_dir: Path = Path("/var/lib/meshctl/agent")
    auth_key_file: Path = Path("/etc/meshctl/authkey")
    interface: str = "mesh0"
    port: int = 41641
    backend: Backend = "auto"
    socket: Path = Path("/run/meshctl/agent.sock")
    derp_home: int | None = None
    hostname: str = ""
    magic_dns: bool = True
    packet_filter: bool = True

    @property
    def disco_port(self) -> int:
        """The agent's own UDP socket for disco and STUN (WireGuard owns `port`)."""
        return self.port + 1

    @property
    def machine_key_path(self) -> Path:
        return self.state_dir / "machine.key"

    @property
    def node_key_path(self) -> Path:
        return self.state_dir / "node.key"

    def effective_hostname(self) -> str:
        return self.hostname or _socket.gethostname().split(".")[0]


def _get(d: dict[str, Any], name: str, kind: type, path: str) -> Any:
    v = d.get(name)
    if v is None:
        return None
    if not isinstance(v, kind) or (isinstance(v, bool) and kind is int):
        raise AgentConfigError(f"{name} must be a {kind.__name__}, got {type(v).__name__} {v!r}", path=path)
    return v


def parse_config(data: dict[str, Any], path: str = "agent.toml") -> AgentConfig:
    unknown = sorted(set(data) - _KNOWN)
    if unknown:
        raise AgentConfigError(f"unknown setting {unknown[0]!r}", path=path,
                               hint="known: " + ", ".join(sorted(_KNOWN)))
    url = _get(data, "control_url", str, path)
    key_text = _get(data, "control_key", str, path)
    if not url or not url.startswith(("http://", "https://")):
        raise AgentConfigError(f"control_url must be an http:// or https:// URL, got {url!r}", path=path)
    if not key_text:
        raise AgentConfigError("control_key is required (the pinned ctrlkey:… of the control server)", path=path,
                               hint="read it with `meshctl control key` on the control host")
    try:
        key = ControlPublicKey.from_text(key_text)
    except KeysError as err:
        raise AgentConfigError(f"control_key: {err}", path=path) from None
    kw: dict[str, Any] = {}
    for name in ("state_dir", "auth_key_file", "socket"):
        if (v := _get(data, name, str, path)) is not None:
            kw[name] = Path(v)
    for name in ("interface", "hostname"):
        if (v := _get(data, name, str, path)) is not None:
            kw[name] = v
    iface = kw.get("interface", "mesh0")
    if not 1 <= len(iface) <= 15 or "/" in iface or " " in iface:
        raise AgentConfigError(f"interface must be a Linux interface name (1-15 characters), got {iface!r}", path=path)
    if (port := _get(data, "port", int, path)) is not None:
        if not 1 <= port <= 65534:
            raise AgentConfigError(f"port must be 1-65534 (disco uses port + 1), got {port}", path=path)
        kw["port"] = port
    if (backend := _get(data, "backend", str, path)) is not None:
        if backend not in ("auto", "kernel", "userspace"):
            raise AgentConfigError(f"backend must be auto, kernel or userspace, got {backend!r}", path=path)
        kw["backend"] = backend
    for name in ("magic_dns", "packet_filter"):
        if (v := _get(data, name, bool, path)) is not None:
            kw[name] = v
    if (home := _get(data, "derp_home", int, path)) is not None:
        if home <= 0:
            raise AgentConfigError(f"derp_home must be a DERP region id (e.g. 900), got {home}", path=path)
        kw["derp_home"] = home
    return AgentConfig(control_url=url.rstrip("/"), control_key=key, **kw)


def load_config(path: Path) -> AgentConfig:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise AgentConfigError("config file not found", path=str(path),
                               hint="pass --config FILE or create /etc/meshctl/agent.toml") from None
    except OSError as err:
        raise AgentConfigError(f"cannot read config: {err.strerror}", path=str(path)) from None
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise AgentConfigError(f"not valid TOML: {err}", path=str(path)) from None
    return parse_config(data, str(path))
