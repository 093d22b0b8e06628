"""Role `control`: the coordination server's config, state directory and hardened unit, started.

The server makes its own key (`control.key`, 0600) on first start; the runner reads back `control.pub`
afterwards and pins it in every node's config.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files

from meshctl.deploy.mesh import MeshPlan
from meshctl.deploy.templates import render

from ..common.defaults import DEFAULTS as COMMON_DEFAULTS
from ..common.service import ensure_service, put_text
from .defaults import DEFAULTS

TEMPLATES = Path(__file__).resolve().parent / "templates"
UNIT = "meshctl-control.service"


def _ipv4(address: str) -> str:
    try:
        return str(ipaddress.IPv4Address(address))
    except ValueError:
        return ""


def render_config(mesh: MeshPlan, data: Mapping[str, Any]) -> str:
    """`/etc/meshctl/control.toml` for this mesh (the DERP map comes from the workspace regions + DERP hosts)."""
    regions = [{"id": r.id, "code": r.code, "name": r.name,
                "servers": [{"name": s.name, "address": s.address, "ipv4": _ipv4(s.address),
                             "derp_port": s.derp_port, "stun_port": s.stun_port, "plain_http": s.plain_http}
                            for s in r.servers]}
               for r in mesh.regions]
    return render(TEMPLATES, "control.toml.j2", mesh=mesh, regions=regions, listen=data["control_listen"],
                  state_dir=data["control_state_dir"], db=data["control_db"])


def render_unit(data: Mapping[str, Any]) -> str:
    return render(TEMPLATES, "meshctl-control.service.j2", prefix=data["meshctl_prefix"],
                  state_dir=data["control_state_dir"])


@deploy("control", data_defaults=DEFAULTS)
def apply(mesh: MeshPlan, upgraded: bool = False) -> None:
    data = {**COMMON_DEFAULTS, **DEFAULTS, **host.data.dict()}
    files.directory(name="directory /etc/meshctl", path="/etc/meshctl", mode="755")
    files.directory(name="state directory", path=str(data["control_state_dir"]), mode="700")
    conf = put_text("config control.toml", render_config(mesh, data), "/etc/meshctl/control.toml", "644")
    ensure_service(UNIT, render_unit(data), [conf], upgraded)
