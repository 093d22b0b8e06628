"""pyinfra inventory for the running meshctl lab (`meshctl lab up`): groups `control`, `derp`, `nodes`.

The lab is the one named by `$MESHCTL_LAB` (default `lab`). Each host carries the SSH data pyinfra needs
(the lab's key, its known_hosts file, strict host key checking) and the lab facts roles use: `lab_role`,
`public_address` (the address other hosts reach it at), `nat` (none|easy|hard), `derp_region` (900) on DERP hosts.
Module-level names starting with "_" are not groups (pyinfra ignores them).
"""

from __future__ import annotations

import os as _os

from meshctl.lab import LabHost as _LabHost
from meshctl.lab import LabNotRunningError as _LabNotRunningError
from meshctl.lab import load_state as _load_state

_LAB_NAME = _os.environ.get("MESHCTL_LAB", "lab")
_DERP_REGION = 900

try:
    _state = _load_state(_LAB_NAME)
except _LabNotRunningError as _err:
    raise _LabNotRunningError(_LAB_NAME, _err.state_path) from None
if not _state.hosts:
    raise _LabNotRunningError(_LAB_NAME, _state.state_path)


def _host(host: _LabHost) -> tuple[str, dict[str, object]]:
    data: dict[str, object] = {
        "ssh_hostname": host.ssh_hostname,
        "ssh_port": host.ssh_port,
        "ssh_user": "root",
        "ssh_key": _state.ssh_key,
        "ssh_known_hosts_file": _state.known_hosts,
        "ssh_strict_host_key_checking": "yes",
        "ssh_allow_agent": False,
        "ssh_look_for_keys": False,
        "lab_role": host.role.value,
        "public_address": host.public_address,
        "nat": host.nat.value,
    }
    if host.role.value == "derp":
        data["derp_region"] = _DERP_REGION
    return host.name, data


control = ([_host(h) for h in _state.by_role("control")], {})
derp = ([_host(h) for h in _state.by_role("derp")], {"derp_region": _DERP_REGION})
nodes = ([_host(h) for h in _state.by_role("node")], {})
