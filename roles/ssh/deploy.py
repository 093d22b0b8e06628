"""Role `ssh`: scheduled rotation on every node; sshd trusting the mesh's CA through the agent's drop-in.

On a host of the `nodes` group it installs

- `/etc/meshctl/rotation.toml`: the rotation policy (the workspace's `[rotation]` when the runner passes
  it, else the defaults of `meshctl.workspace.RotationPolicy`);
- `meshctl-rotate.service` (oneshot `meshctl agent rotate --if-due`, logging what it rotated and why to
  the journal) and `meshctl-rotate.timer` (enabled; first run a minute after start, then hourly);
- `Include /etc/ssh/sshd_config.d/*.conf` in sshd_config (Debian has it already), so the drop-in the
  agent writes (`HostCertificate`, `TrustedUserCAKeys` for the mesh user CA) takes effect.

Host certificates themselves are fetched by the agent over its machine-key channel; the CA key never
leaves the control host. A re-run changes nothing.
"""

from __future__ import annotations

from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, systemd

from meshctl.deploy.templates import render
from meshctl.workspace import RotationPolicy

from ..common.defaults import DEFAULTS as COMMON_DEFAULTS
from ..common.service import put_text
from .defaults import DEFAULTS

TEMPLATES = Path(__file__).resolve().parent / "templates"
SERVICE = "meshctl-rotate.service"
TIMER = "meshctl-rotate.timer"
POLICY_FILE = "/etc/meshctl/rotation.toml"


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def render_policy(policy: RotationPolicy) -> str:
    return render(TEMPLATES, "rotation.toml.j2", node_key_max_age=_duration(policy.node_key_max_age),
                  host_cert_validity=_duration(policy.host_cert_validity),
                  host_cert_renew_before=_duration(policy.host_cert_renew_before))


def render_units(data: dict[str, object]) -> tuple[str, str]:
    service = render(TEMPLATES, "meshctl-rotate.service.j2", prefix=data["meshctl_prefix"])
    timer = render(TEMPLATES, "meshctl-rotate.timer.j2", first_run=data["rotate_first_run"],
                   on_calendar=data["rotate_on_calendar"], randomized_delay=data["rotate_randomized_delay"])
    return service, timer


@deploy("ssh", data_defaults=DEFAULTS)
def apply(rotation: RotationPolicy | None = None) -> None:
    """`rotation`: the workspace's policy (the runner passes `workspace.rotation`); defaults otherwise."""
    if "nodes" not in host.groups:
        return
    data = {**COMMON_DEFAULTS, **DEFAULTS, **host.data.dict()}
    files.line(name="sshd reads sshd_config.d drop-ins", path="/etc/ssh/sshd_config",
               line=r"^Include /etc/ssh/sshd_config\.d/\*\.conf", replace="Include /etc/ssh/sshd_config.d/*.conf")
    files.directory(name="directory /etc/meshctl", path="/etc/meshctl", mode="755")
    put_text("rotation policy", render_policy(rotation or RotationPolicy()), POLICY_FILE, "644")
    service, timer = render_units(data)
    service_op = put_text(f"unit {SERVICE}", service, f"/etc/systemd/system/{SERVICE}", "644")
    timer_op = put_text(f"unit {TIMER}", timer, f"/etc/systemd/system/{TIMER}", "644")
    systemd.daemon_reload(name="systemd daemon-reload (rotation)",
                          _if=lambda: service_op.did_change() or timer_op.did_change())
    systemd.service(name=f"restart {TIMER}", service=TIMER, restarted=True, _if=timer_op.did_change)
    systemd.service(name=f"start {TIMER}", service=TIMER, running=True, enabled=True)
