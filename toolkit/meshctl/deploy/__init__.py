"""meshctl.deploy: provision a mesh onto a fleet with pyinfra roles, in-process.

Public API:
    load_inventory(path) -> InventorySpec         read + check an inventory before connecting
    known_data_keys() -> set[str]                 data keys the roles read (their defaults)
    build_wheelhouse() -> Wheelhouse              meshctl + deps as wheels for hosts without an index
    run_deploy(spec, workspace, wheelhouse, options, progress) -> DeployResult
    DeployOptions, DeployResult, HostResult, OpResult, RichProgress, summary_table
    DeployError, InventoryError, RoleError, WheelhouseError
"""

from __future__ import annotations

from .errors import DeployError, InventoryError, RoleError, WheelhouseError
from .inventory import InventorySpec, load_inventory
from .progress import RichProgress, summary_table
from .result import DeployResult, HostResult, OpResult
from .roles import ROLE_ORDER, role_defaults
from .runner import DeployOptions, run_deploy
from .wheelhouse import Wheelhouse, build_wheelhouse

__all__ = [
    "ROLE_ORDER",
    "DeployError",
    "DeployOptions",
    "DeployResult",
    "HostResult",
    "InventoryError",
    "InventorySpec",
    "OpResult",
    "RichProgress",
    "RoleError",
    "Wheelhouse",
    "WheelhouseError",
    "build_wheelhouse",
    "known_data_keys",
    "load_inventory",
    "run_deploy",
    "summary_table",
]


def known_data_keys() -> set[str]:
    """Every data key a role reads (the union of the roles' DEFAULTS)."""
    keys: set[str] = set()
    for role in ROLE_ORDER:
        keys |= set(role_defaults(role))
    return keys
