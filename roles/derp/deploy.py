"""Role `derp`: a DERP relay with its STUN server, admitted clients checked with the control server.

The relay's private key is generated on the host at first start (never by the operator). The admission
token is minted on the control host by the runner and uploaded 0600 only when the host has none yet; the
region's mesh key (from the workspace secrets) is uploaded only where a region has several servers.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files

from meshctl.deploy.mesh import MeshPlan
from meshctl.deploy.templates import render

from ..common.defaults import DEFAULTS as COMMON_DEFAULTS
from ..common.service import ensure_service, put_secret, put_text
from .defaults import DEFAULTS

TEMPLATES = Path(__file__).resolve().parent / "templates"
UNIT = "meshctl-derp.service"
TOKEN_FILE = "/etc/meshctl/derp-token"
MESH_KEY_FILE = "/etc/meshctl/derp-mesh.key"
KEY_FILE = "/var/lib/meshctl/derp/derp.key"


def render_config(mesh: MeshPlan, name: str, data: Mapping[str, Any]) -> str:
    """`/etc/meshctl/derp.toml` for DERP host `name`."""
    server = mesh.derp_server(name)
    peers = mesh.mesh_peers(name)
    return render(TEMPLATES, "derp.toml.j2",
                  listen=f"0.0.0.0:{server.derp_port}", stun_listen=f"0.0.0.0:{server.stun_port}",
                  key_file=KEY_FILE, region_id=server.region_id,
                  tls_cert=data["derp_tls_cert"], tls_key=data["derp_tls_key"],
                  verify_url=f"{mesh.control_url}/derp/verify", verify_token_file=TOKEN_FILE,
                  verify_fail_open=bool(data["derp_verify_fail_open"]),
                  mesh_with=list(peers), mesh_key_file=MESH_KEY_FILE if peers else "")


def render_unit(data: Mapping[str, Any]) -> str:
    return render(TEMPLATES, "meshctl-derp.service.j2", prefix=data["meshctl_prefix"])


@deploy("derp", data_defaults=DEFAULTS)
def apply(mesh: MeshPlan, token: str | None = None, mesh_key: str | None = None, upgraded: bool = False) -> None:
    """`token`: a new admission token (None keeps the one on the host); `mesh_key`: the region's (64 hex)."""
    data = {**COMMON_DEFAULTS, **DEFAULTS, **host.data.dict()}
    files.directory(name="directory /etc/meshctl", path="/etc/meshctl", mode="755")
    files.directory(name="state directory", path="/var/lib/meshctl/derp", mode="700")
    changed = []
    if token is not None:
        changed.append(put_secret("admission token", token + "\n", TOKEN_FILE))
    if mesh.mesh_peers(host.name):
        if mesh_key is None:
            raise ValueError(f"DERP host {host.name} is in a multi-server region but no mesh key was given")
        changed.append(put_secret("region mesh key", mesh_key + "\n", MESH_KEY_FILE))
    changed.append(put_text("config derp.toml", render_config(mesh, host.name, data), "/etc/meshctl/derp.toml", "644"))
    ensure_service(UNIT, render_unit(data), changed, upgraded)
