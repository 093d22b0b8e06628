"""Which workspace a deploy uses: the one named or found (`meshctl.workspace.find_workspace`), or, for an
inventory of a local lab (every host carries `lab_role`, as `inventories/lab.py` writes), the lab's own
workspace under its state directory, created on first use with the control URL pointing at the lab's control
host. The lab is the one `lab_name` names, else `$MESHCTL_LAB` (default `lab`), as for `inventories/lab.py`.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError
from ..workspace import Workspace, create_workspace, find_workspace
from .inventory import InventorySpec
from .mesh import CONTROL_PORT, host_address

__all__ = ["lab_workspace", "lab_workspace_dir", "resolve_workspace"]

LAB_ROOT = Path("/var/lib/meshctl/lab")


def lab_workspace_dir(lab_name: str, root: Path = LAB_ROOT) -> Path:
    return root / lab_name / "workspace"


def lab_workspace(lab_name: str, control_address: str, root: Path = LAB_ROOT) -> Workspace:
    """The lab's workspace (made once; it goes away with `meshctl lab down`)."""
    path = lab_workspace_dir(lab_name, root)
    if (path / "mesh.toml").is_file():
        return Workspace.load(path)
    return create_workspace(path, name=lab_name.replace(".", "-"),
                            control_url=f"http://{control_address}:{CONTROL_PORT}")


def resolve_workspace(spec: InventorySpec, explicit: Path | None = None, root: Path = LAB_ROOT) -> Workspace:
    try:
        return find_workspace(explicit)
    except ConfigError:
        if explicit is not None:
            raise
        if not all(spec.data(h).get("lab_role") for h in spec.hosts):
            raise
        labs = {spec.data(h).get("lab_name") or os.environ.get("MESHCTL_LAB", "lab") for h in spec.hosts}
        if len(labs) != 1:
            raise
        lab_name = str(labs.pop())
        control = spec.group("control")[0]
        return lab_workspace(lab_name, host_address(control, spec.data(control)), root)
