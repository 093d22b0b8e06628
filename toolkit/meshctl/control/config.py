"""Configuration of `meshctl control serve`: a TOML file (`/etc/meshctl/control.toml`) plus CLI overrides.

    listen = "0.0.0.0:8080"
    state_dir = "/var/lib/meshctl/control"      # control.key (0600), control.pub, control.db
    db = "sqlite:////var/lib/meshctl/control/control.db"   # or postgresql+psycopg://user@host/db
    domain = "mesh.internal"
    ipv4_prefix = "100.64.0.0/10"
    ipv6_prefix = "fd7a:115c:a1e0::/48"
    node_key_expiry = "180d"                    # "0" disables expiry mesh-wide
    ephemeral_timeout = "5m"
    keepalive_interval = "50s"
    tls_cert = ""                               # both set: serve HTTPS
    tls_key = ""
    nameservers = []                            # upstream resolvers handed to nodes' MagicDNS

    [[derp.regions]]
    id = 900
    code = "lab"
    name = "Lab"
      [[derp.regions.nodes]]
      name = "900a"
      host_name = "10.77.0.2"
      ipv4 = "10.77.0.2"
      derp_port = 8443
      stun_port = 3478
      plain_http = true
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..wire import DERPMap, DerpNode, DerpRegion
from ..workspace import parse_duration

__all__ = ["DEFAULT_STATE_DIR", "ControlConfig", "load_config", "parse_listen"]

DEFAULT_STATE_DIR = Path("/var/lib/meshctl/control")
_V4 = ipaddress.IPv4Network("100.64.0.0/10")
_V6 = ipaddress.IPv6Network("fd7a:115c:a1e0::/48")
_KNOWN = {"listen", "state_dir", "db", "domain", "ipv4_prefix", "ipv6_prefix", "node_key_expiry",
          "ephemeral_timeout", "keepalive_interval", "tls_cert", "tls_key", "derp", "nameservers"}


@dataclass(frozen=True, slots=True)
class ControlConfig:
    listen: str = "0.0.0.0:8080"
    state_dir: Path = DEFAULT_STATE_DIR
    db: str = ""  # empty: sqlite file control.db in state_dir
    domain: str = "mesh.internal"
    ipv4_prefix: ipaddress.IPv4Network = _V4
    ipv6_prefix: ipaddress.IPv6Network = _V6
    node_key_expiry: int = 180 * 86400  # seconds; 0 = never
    ephemeral_timeout: int = 300
    keepalive_interval: float = 50.0
    housekeeping_interval: float = 1.0
    map_batch_interval: float = 0.05  # minimum spacing of delta frames on one stream (bursts coalesce)
    presence_batch_interval: float = 1.0  # the same for frames carrying only online/last-seen changes
    tls_cert: Path | None = None
    tls_key: Path | None = None
    nameservers: tuple[str, ...] = ()
    derp_map: DERPMap = field(default_factory=DERPMap)

    @property
    def db_url(self) -> str:
        return self.db or f"sqlite:///{self.state_dir / 'control.db'}"

    def with_overrides(self, **kw: Any) -> ControlConfig:
        """Apply CLI flags (None = not given)."""
        given = {k: v for k, v in kw.items() if v is not None}
        if "state_dir" in given:
            given["state_dir"] = Path(given["state_dir"])
        for k in ("tls_cert", "tls_key"):
            if k in given:
                given[k] = Path(given[k])
        if "listen" in given:
            parse_listen(given["listen"])
        return replace(self, **given)


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"listen: want HOST:PORT (e.g. 0.0.0.0:8080), got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def _str(d: dict[str, Any], key: str, where: str, default: str = "") -> str:
    v = d.get(key, default)
    if not isinstance(v, str):
        raise ConfigError(f"{where}: {key} must be a string, got {type(v).__name__}")
    return v


def _int(d: dict[str, Any], key: str, where: str, default: int = 0) -> int:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{where}: {key} must be an integer, got {type(v).__name__}")
    return int(v)


def _derp_map(raw: Any, where: str) -> DERPMap:
    if raw is None:
        return DERPMap()
    if not isinstance(raw, dict) or not isinstance(raw.get("regions", []), list):
        raise ConfigError(f"{where}: [derp] must hold a [[derp.regions]] list")
    regions: dict[int, DerpRegion] = {}
    for i, r in enumerate(raw.get("regions", [])):
        w = f"{where}: derp.regions[{i}]"
        rid = _int(r, "id", w)
        if not 900 <= rid <= 999:
            raise ConfigError(f"{w}: id must be in 900-999 (reserved for your own DERP regions), got {rid}")
        if rid in regions:
            raise ConfigError(f"{w}: duplicate region id {rid}")
        nodes = []
        for j, n in enumerate(r.get("nodes", [])):
            wn = f"{w}.nodes[{j}]"
            host = _str(n, "host_name", wn) or _str(n, "ipv4", wn)
            if not host:
                raise ConfigError(f"{wn}: host_name (or ipv4) is required")
            nodes.append(DerpNode(
                name=_str(n, "name", wn, f"{rid}{chr(97 + j)}"), region_id=rid, host_name=host,
                ipv4=_str(n, "ipv4", wn), ipv6=_str(n, "ipv6", wn), derp_port=_int(n, "derp_port", wn),
                stun_port=_int(n, "stun_port", wn), plain_http=bool(n.get("plain_http", False)),
                can_port80=bool(n.get("can_port80", False)), cert_name=_str(n, "cert_name", wn),
            ))
        regions[rid] = DerpRegion(region_id=rid, region_code=_str(r, "code", w, f"r{rid}"),
                                  region_name=_str(r, "name", w, f"Region {rid}"), nodes=tuple(nodes))
    return DERPMap(regions=regions)


def load_config(path: Path | None) -> ControlConfig:
    """Read a control TOML file (None → defaults). Unknown keys are an error, not silently ignored."""
    if path is None:
        return ControlConfig()
    where = str(path)
    try:
        raw = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such config file") from None
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{where}: cannot read config: {err}") from None
    unknown = set(raw) - _KNOWN
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(_KNOWN)})")
    try:
        v4 = ipaddress.IPv4Network(_str(raw, "ipv4_prefix", where, "100.64.0.0/10"))
        v6 = ipaddress.IPv6Network(_str(raw, "ipv6_prefix", where, "fd7a:115c:a1e0::/48"))
    except ValueError as err:
        raise ConfigError(f"{where}: bad prefix: {err}") from None
    tls_cert, tls_key = _str(raw, "tls_cert", where), _str(raw, "tls_key", where)
    if bool(tls_cert) != bool(tls_key):
        raise ConfigError(f"{where}: tls_cert and tls_key must be given together")
    ns = raw.get("nameservers", [])
    if not isinstance(ns, list) or not all(isinstance(x, str) for x in ns):
        raise ConfigError(f"{where}: nameservers must be a list of strings")
    listen = _str(raw, "listen", where, "0.0.0.0:8080")
    try:
        parse_listen(listen)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    return ControlConfig(
        listen=listen, state_dir=Path(_str(raw, "state_dir", where, str(DEFAULT_STATE_DIR))),
        db=_str(raw, "db", where), domain=_str(raw, "domain", where, "mesh.internal"), ipv4_prefix=v4,
        ipv6_prefix=v6,
        node_key_expiry=parse_duration(raw.get("node_key_expiry", "180d"), f"{where}: node_key_expiry"),
        ephemeral_timeout=parse_duration(raw.get("ephemeral_timeout", "5m"), f"{where}: ephemeral_timeout"),
        keepalive_interval=float(parse_duration(raw.get("keepalive_interval", "50s"), f"{where}: keepalive_interval")),
        tls_cert=Path(tls_cert) if tls_cert else None, tls_key=Path(tls_key) if tls_key else None,
        nameservers=tuple(ns), derp_map=_derp_map(raw.get("derp"), where),
    )
