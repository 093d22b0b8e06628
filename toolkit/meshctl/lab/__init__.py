"""meshctl.lab: a disposable fleet of real Debian hosts on one machine (systemd-nspawn, one netns per host).

Public API (what the deploy, verify and rotation parts and the e2e tests import):

    from meshctl.lab import load_state, LabState, LabHost, Role, Nat

    state = load_state("lab")                 # LabNotRunningError (naming `meshctl lab up`) when it is not up
    state.hosts                               # tuple[LabHost]: name, role, address, public_address,
                                              #   ssh_hostname, ssh_port, nat, pid, machine_id, netns, ...
    state.host("node1"); state.by_role("derp")
    state.ssh_command("node1", ["uname", "-a"])   # argv: ssh with the lab key, its known_hosts, strict checking
    state.run("node1", "systemctl is-system-running", check=True)   # CompletedProcess[str]
    state.ssh_key, state.known_hosts, state.state_path

    up(name, nodes=3, derps=1, nat={"node2": Nat.EASY}, progress=print) -> LabState
    down(name) -> DownReport          ensure_rootfs() -> Rootfs          health(state) -> [HostHealth]

Addressing: `plan.py` (lab internet `prefix.0/24`: control .10, derpN .20+N, public nodeN .100+N, the
router of a NATed nodeN .200+N; the NATed node itself is 192.168.N.2 on its own LAN). Inventory for pyinfra:
`inventories/lab.py` (`MESHCTL_LAB` names the lab, default "lab"); `INVENTORY_PATH` is its path.
"""

from __future__ import annotations

from pathlib import Path

from .errors import (
    LabCommandError,
    LabConflictError,
    LabError,
    LabHostError,
    LabNotRunningError,
    LabPrerequisiteError,
    RootfsBuildError,
)
from .lifecycle import DownReport, HostHealth, check_prerequisites, down, health, up
from .plan import Nat, Role, parse_nat_options
from .rootfs import PACKAGES, Rootfs, ensure_rootfs
from .state import LAB_ROOT, LabHost, LabState, load_state, state_path

__all__ = [
    "INVENTORY_PATH",
    "LAB_ROOT",
    "PACKAGES",
    "DownReport",
    "HostHealth",
    "LabCommandError",
    "LabConflictError",
    "LabError",
    "LabHost",
    "LabHostError",
    "LabNotRunningError",
    "LabPrerequisiteError",
    "LabState",
    "Nat",
    "Role",
    "Rootfs",
    "RootfsBuildError",
    "check_prerequisites",
    "down",
    "ensure_rootfs",
    "health",
    "inventory_path",
    "load_state",
    "parse_nat_options",
    "state_path",
    "up",
]


def inventory_path() -> Path:
    """The shipped `inventories/lab.py`: in a checkout, or inside the installed wheel (meshctl/_data)."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[3] / "inventories" / "lab.py", here.parents[1] / "_data" / "inventories" / "lab.py"):
        if candidate.is_file():
            return candidate
    return here.parents[3] / "inventories" / "lab.py"


INVENTORY_PATH = inventory_path()
