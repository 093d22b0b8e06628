"""Relay configuration: the TOML file `/etc/meshctl/derp.toml` merged with command-line overrides.

Keys (same names as the `meshctl derp serve` flags, in snake_case): `listen`, `stun_listen`,
`key_file`, `region_id`, `tls_cert`, `tls_key`, `verify_url`, `verify_token_file`, `verify_fail_open`,
`mesh_with` (list of URLs), `mesh_key_file`. Unknown keys are an error (a typo must not silently
disable admission). An empty `stun_listen` disables STUN.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["DEFAULT_KEY_FILE", "RelayConfig", "load_config", "parse_hostport"]

DEFAULT_KEY_FILE = Path("/var/lib/meshctl/derp/derp.key")


@dataclass(frozen=True, slots=True)
class RelayConfig:
    listen: str = "0.0.0.0:443"
    stun_listen: str = "0.0.0.0:3478"
    key_file: Path = DEFAULT_KEY_FILE
    region_id: int | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    verify_url: str | None = None
    verify_token_file: Path | None = None
    verify_fail_open: bool = False
    mesh_with: tuple[str, ...] = field(default_factory=tuple)
    mesh_key_file: Path | None = None

    def validate(self) -> RelayConfig:
        parse_hostport(self.listen, "listen")
        if self.stun_listen:
            parse_hostport(self.stun_listen, "stun_listen")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert and tls_key must be given together", hint="pass both --tls-cert and --tls-key")
        if self.verify_url and self.verify_token_file is None:
            raise ConfigError("verify_url needs verify_token_file (the DERP admission token)",
                              hint="pass --verify-token-file /etc/meshctl/derp-token")
        if self.verify_url and not self.verify_url.startswith(("http://", "https://")):
            raise ConfigError(f"verify_url must be an http(s) URL, got {self.verify_url!r}")
        if self.mesh_with and self.mesh_key_file is None:
            raise ConfigError("mesh_with needs mesh_key_file (64 hex, shared by the region's relays)",
                              hint="pass --mesh-key-file /etc/meshctl/derp-mesh.key")
        if self.region_id is not None and not 0 < self.region_id < 2**53:
            raise ConfigError(f"region_id must be between 1 and 2^53-1, got {self.region_id}")
        return self


def parse_hostport(text: str, what: str = "address") -> tuple[str, int]:
    """`HOST:PORT` or `[V6]:PORT` → (host, port); an empty host means all addresses."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{what}: want HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port_text)


_PATHS = {"key_file", "tls_cert", "tls_key", "verify_token_file", "mesh_key_file"}


def _coerce(name: str, value: Any, source: str) -> Any:
    if name in _PATHS:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {name} must be a path string, got {type(value).__name__}")
        return Path(value)
    if name == "mesh_with":
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{source}: mesh_with must be a list of URLs")
        return tuple(v.strip() for v in value)
    if name == "region_id":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: region_id must be an integer")
        return value
    if name == "verify_fail_open":
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: verify_fail_open must be true or false")
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{source}: {name} must be a string, got {type(value).__name__}")
    return value


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> RelayConfig:
    """Defaults, then the TOML file (if given), then `overrides` (None values are ignored)."""
    cfg = RelayConfig()
    known = {f.name for f in fields(RelayConfig)}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"DERP config {path} does not exist") from None
        except OSError as e:
            raise ConfigError(f"cannot read DERP config {path}: {e.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"DERP config {path} is not valid TOML: {e}") from None
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"DERP config {path}: unknown keys {', '.join(unknown)}",
                              hint=f"known keys: {', '.join(sorted(known))}")
        cfg = replace(cfg, **{k: _coerce(k, v, str(path)) for k, v in data.items()})
    if overrides:
        cfg = replace(cfg, **{k: _coerce(k, v, "command line") for k, v in overrides.items() if v is not None})
    return cfg.validate()
