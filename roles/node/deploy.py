"""Role `node`: the node agent with the control key pinned, a one-off auth key for its first registration.

The runner mints the auth key on the control host only for a node that is not registered yet (no
`node.key` in the agent's state dir); it is uploaded 0600 and the agent deletes it once registered.
A registered node gets no auth key operation at all, so a re-run changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files

from meshctl.agent.unit import agent_unit_text
from meshctl.deploy.mesh import MeshPlan
from meshctl.deploy.templates import render

from ..common.defaults import DEFAULTS as COMMON_DEFAULTS
from ..common.service import ensure_service, put_secret, put_text
from .defaults import DEFAULTS

TEMPLATES = Path(__file__).resolve().parent / "templates"
UNIT = "meshctl-agent.service"
STATE_DIR = "/var/lib/meshctl/agent"
AUTH_KEY_FILE = "/etc/meshctl/authkey"
SOCKET = "/run/meshctl/agent.sock"


def render_config(mesh: MeshPlan, control_key: str, data: Mapping[str, Any]) -> str:
    """`/etc/meshctl/agent.toml`: where control is and which key it must present."""
    return render(TEMPLATES, "agent.toml.j2", control_url=mesh.control_url, control_key=control_key,
                  state_dir=STATE_DIR, auth_key_file=AUTH_KEY_FILE, interface=data["wg_interface"],
                  port=int(data["wg_port"]), backend=data["wg_backend"], socket=SOCKET)


def render_unit(data: Mapping[str, Any]) -> str:
    """The agent's hardened unit, as the agent package defines it (one source of truth)."""
    return agent_unit_text(exec_path=f"{data['meshctl_prefix']}/bin/meshctl", config="/etc/meshctl/agent.toml")


@deploy("node", data_defaults=DEFAULTS)
def apply(mesh: MeshPlan, control_key: str, auth_key: str | None = None, upgraded: bool = False) -> None:
    """`auth_key`: a fresh one-off key for an unregistered node (None for a registered one)."""
    data = {**COMMON_DEFAULTS, **DEFAULTS, **host.data.dict()}
    files.directory(name="directory /etc/meshctl", path="/etc/meshctl", mode="755")
    files.directory(name="state directory", path=STATE_DIR, mode="700")
    changed = []
    if auth_key is not None:
        changed.append(put_secret("one-off auth key", auth_key + "\n", AUTH_KEY_FILE))
    changed.append(put_text("config agent.toml", render_config(mesh, control_key, data),
                            "/etc/meshctl/agent.toml", "644"))
    ensure_service(UNIT, render_unit(data), changed, upgraded)
