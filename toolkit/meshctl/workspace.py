"""The operator workspace: `mesh.toml` (the mesh's settings) and `secrets/` (0700) beside it.

    ws/
      mesh.toml                 name, domain, prefixes, control URL, DERP regions, rotation policy
      secrets/                  0700: deploy SSH key pair, admin API key, DERP mesh keys (all 0600)

The workspace is found from `--workspace`, `$MESHCTL_WORKSPACE`, or the current directory upwards.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .errors import ConfigError
from .keys import ensure_private_dir, write_secret_file

__all__ = [
    "DEFAULT_DOMAIN",
    "DEFAULT_IPV4_PREFIX",
    "DEFAULT_IPV6_PREFIX",
    "DerpRegionConfig",
    "RotationPolicy",
    "Workspace",
    "create_workspace",
    "find_workspace",
    "generate_ssh_keypair",
    "parse_duration",
]

DEFAULT_DOMAIN = "mesh.internal"
DEFAULT_IPV4_PREFIX = "100.64.0.0/10"
DEFAULT_IPV6_PREFIX = "fd7a:115c:a1e0::/48"
MESH_TOML = "mesh.toml"
SECRETS = "secrets"
DEPLOY_KEY = "deploy_ed25519"

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str | int, what: str = "duration") -> int:
    """'90d', '8h', '30m', '45s', '2w' (or a number of seconds) -> seconds."""
    if isinstance(text, int):
        return text
    t = text.strip()
    if t.isdigit():
        return int(t)
    if len(t) >= 2 and t[:-1].isdigit() and t[-1] in _UNITS:
        return int(t[:-1]) * _UNITS[t[-1]]
    raise ConfigError(f"{what}: cannot read {text!r} as a duration (want e.g. 90d, 8h, 30m, 45s)")


@dataclass(frozen=True, slots=True)
class DerpRegionConfig:
    id: int
    code: str
    name: str


@dataclass(frozen=True, slots=True)
class RotationPolicy:
    """Maximum ages and margins, in seconds."""

    node_key_max_age: int = 180 * 86400
    host_cert_validity: int = 30 * 86400
    host_cert_renew_before: int = 10 * 86400
    deploy_key_max_age: int = 90 * 86400


@dataclass(frozen=True, slots=True)
class Workspace:
    root: Path
    name: str
    domain: str
    ipv4_prefix: ipaddress.IPv4Network
    ipv6_prefix: ipaddress.IPv6Network
    control_url: str
    derp_regions: tuple[DerpRegionConfig, ...]
    rotation: RotationPolicy = field(default_factory=RotationPolicy)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def secrets_dir(self) -> Path:
        return self.root / SECRETS

    @property
    def deploy_key(self) -> Path:
        """Private half of the deploy SSH key (the `.pub` sits beside it)."""
        return self.secrets_dir / DEPLOY_KEY

    @classmethod
    def load(cls, root: Path) -> Workspace:
        path = Path(root) / MESH_TOML
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{root} is not a meshctl workspace (no {MESH_TOML})",
                              hint=f"create one with: meshctl init {root}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: malformed TOML: {e}") from None
        mesh = data.get("mesh", {})
        try:
            v4 = ipaddress.IPv4Network(mesh.get("ipv4_prefix", DEFAULT_IPV4_PREFIX))
            v6 = ipaddress.IPv6Network(mesh.get("ipv6_prefix", DEFAULT_IPV6_PREFIX))
        except ValueError as e:
            raise ConfigError(f"{path}: bad mesh prefix: {e}") from None
        regions = tuple(
            DerpRegionConfig(int(r["id"]), str(r.get("code", f"r{r['id']}")), str(r.get("name", r.get("code", ""))))
            for r in data.get("derp", {}).get("regions", [])
        )
        rot = data.get("rotation", {})
        policy = RotationPolicy(
            node_key_max_age=parse_duration(rot.get("node_key_max_age", "180d"), "rotation.node_key_max_age"),
            host_cert_validity=parse_duration(rot.get("host_cert_validity", "30d"), "rotation.host_cert_validity"),
            host_cert_renew_before=parse_duration(rot.get("host_cert_renew_before", "10d"),
                                                  "rotation.host_cert_renew_before"),
            deploy_key_max_age=parse_duration(rot.get("deploy_key_max_age", "90d"), "rotation.deploy_key_max_age"),
        )
        return cls(
            root=Path(root).resolve(),
            name=str(mesh.get("name", "mesh")),
            domain=str(mesh.get("domain", DEFAULT_DOMAIN)),
            ipv4_prefix=v4,
            ipv6_prefix=v6,
            control_url=str(data.get("control", {}).get("url", "")),
            derp_regions=regions,
            rotation=policy,
            raw=data,
        )


def find_workspace(explicit: Path | None = None) -> Workspace:
    """The workspace named explicitly, by $MESHCTL_WORKSPACE, or found from the current directory upwards."""
    if explicit is not None:
        return Workspace.load(explicit)
    env = os.environ.get("MESHCTL_WORKSPACE")
    if env:
        return Workspace.load(Path(env))
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        if (d / MESH_TOML).is_file():
            return Workspace.load(d)
    raise ConfigError("no meshctl workspace here or above (no mesh.toml)",
                      hint="pass --workspace DIR, set MESHCTL_WORKSPACE, or run: meshctl init DIR")


def generate_ssh_keypair(private_path: Path, comment: str) -> str:
    """Write a new ed25519 SSH key pair (OpenSSH format, private 0600); return the public line."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    line = public.decode() + " " + comment
    write_secret_file(private_path, private)
    Path(str(private_path) + ".pub").write_text(line + "\n")
    return line


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def create_workspace(root: Path, *, name: str = "mesh", domain: str = DEFAULT_DOMAIN,
                     control_url: str | None = None) -> Workspace:
    """Create a new workspace at `root`; refuses (touching nothing) if one is already there."""
    root = Path(root)
    if (root / MESH_TOML).exists() or (root / SECRETS).exists():
        raise ConfigError(f"{root} already holds a meshctl workspace; refusing to overwrite it",
                          hint="choose another directory")
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root} exists and is not a directory")
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"mesh name {name!r}: use letters, digits, '-' and '_' only")
    if not domain or " " in domain or domain.startswith(".") or domain.endswith("."):
        raise ConfigError(f"domain {domain!r}: want a DNS suffix such as {DEFAULT_DOMAIN}")
    control_url = control_url or f"http://control.{domain}:8080"
    root.mkdir(parents=True, exist_ok=True)
    ensure_private_dir(root / SECRETS)
    os.chmod(root / SECRETS, 0o700)
    generate_ssh_keypair(root / SECRETS / DEPLOY_KEY, f"meshctl-deploy@{name}")
    text = f"""# meshctl workspace: the settings of one mesh. Secrets live in secrets/ (0700), never here.
[mesh]
name = {_toml_str(name)}
domain = {_toml_str(domain)}             # MagicDNS names are <host>.<domain>
ipv4_prefix = "{DEFAULT_IPV4_PREFIX}"     # one stable IPv4 per node from here
ipv6_prefix = "{DEFAULT_IPV6_PREFIX}"  # and one IPv6

[control]
url = {_toml_str(control_url)}

# DERP regions (ids 900-999 are for self-hosted relays); hosts pick a region in the inventory.
[[derp.regions]]
id = 900
code = "home"
name = "Home"

[rotation]
node_key_max_age = "180d"       # agents rotate their node key before this age
host_cert_validity = "30d"      # SSH host certificates from the mesh CA
host_cert_renew_before = "10d"  # renew when less than this is left
deploy_key_max_age = "90d"      # meshctl keys audit flags an older deploy key
"""
    (root / MESH_TOML).write_text(text)
    return Workspace.load(root)
