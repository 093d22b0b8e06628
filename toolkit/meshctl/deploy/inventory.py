"""Inventories: load a pyinfra Python inventory file, check it, and build pyinfra `Inventory` objects from it.

An inventory is a Python file whose module-level names are groups (names starting with `_` are ignored):

    control = [("ctl-1", {"ssh_hostname": "203.0.113.10", "public_address": "203.0.113.10"})]
    derp = ([("derp-fra", {"derp_region": 900})], {"ssh_user": "root"})      # (hosts, group data)
    nodes = ["web-1", ("web-2", {"tags": ["tag:web"]})]

Every problem is reported as one `InventoryError` line *before* any host is contacted: a missing
`control` or `nodes` group, a data key no role or connector knows (with the nearest known key), a host
listed twice in a group or given two different data dicts, a host name that neither resolves nor has an
`ssh_hostname`. The file is executed with `runpy`, never through `pyinfra_cli` (which monkey-patches
the whole process with gevent on import).
"""

from __future__ import annotations

import difflib
import runpy
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MeshctlError
from .errors import InventoryError

__all__ = [
    "CONNECTOR_KEYS",
    "MESHCTL_KEYS",
    "MESH_GROUPS",
    "REQUIRED_GROUPS",
    "InventorySpec",
    "load_inventory",
    "parse_inventory",
    "resolves",
    "validate_inventory",
]

#: groups with a meaning to meshctl; other group names are allowed (plain pyinfra groups)
MESH_GROUPS = ("control", "derp", "nodes")
REQUIRED_GROUPS = ("control", "nodes")

#: host data the pyinfra SSH connector reads
CONNECTOR_KEYS = frozenset({
    "ssh_hostname", "ssh_port", "ssh_user", "ssh_key", "ssh_key_password", "ssh_password", "ssh_allow_agent",
    "ssh_look_for_keys", "ssh_forward_agent", "ssh_config_file", "ssh_known_hosts_file",
    "ssh_strict_host_key_checking", "ssh_connect_retries", "ssh_connect_retry_min_delay",
    "ssh_connect_retry_max_delay", "ssh_paramiko_connect_kwargs", "ssh_file_transfer_protocol",
})

#: pyinfra global arguments that may be given as data (e.g. `_sudo = True` for a non-root SSH user)
ARGUMENT_KEYS = frozenset({"_sudo", "_sudo_user", "_use_sudo_login", "_sudo_password", "_preserve_sudo_env",
                           "_su_user", "_doas", "_doas_user", "_temp_dir", "_timeout", "_env"})

#: host data meshctl itself reads (role defaults are added by the caller)
MESHCTL_KEYS = frozenset({
    "public_address",   # address other hosts (and NATed nodes) reach this host at
    "nat",              # "none" | "easy" | "hard": informational, shown by demo/verify
    "derp_region",      # DERP region id (900-999) of a DERP host
    "tags",             # ACL tags of a node, e.g. ["tag:web"]
    "control_url",      # on the control host: the URL nodes and DERP servers use instead of the workspace's
    "address",          # the host's address on its own network (differs from public_address behind NAT)
    "lab_name",         # set by inventories/lab.py: which lab the host belongs to
    "lab_role",         # set by inventories/lab.py: control | derp | node
})


@dataclass(frozen=True)
class InventorySpec:
    """A checked inventory: groups of host names with group data, host data, global (`all`) data."""

    path: Path
    groups: Mapping[str, tuple[tuple[str, ...], Mapping[str, Any]]]
    host_data: Mapping[str, Mapping[str, Any]]
    global_data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def hosts(self) -> tuple[str, ...]:
        """Every host name, in order of first appearance."""
        return tuple(self.host_data)

    def group(self, name: str) -> tuple[str, ...]:
        return self.groups.get(name, ((), {}))[0]

    def groups_of(self, host: str) -> tuple[str, ...]:
        return tuple(g for g, (names, _) in self.groups.items() if host in names)

    def check_limit(self, names: Iterable[str] | None) -> None:
        """`--limit` may only name hosts of this inventory."""
        unknown = [n for n in names or () if n not in self.host_data]
        if unknown:
            raise InventoryError(self.path, f"--limit names hosts that are not in the inventory: {', '.join(unknown)}")

    def data(self, host: str) -> dict[str, Any]:
        """Merged data of one host as pyinfra sees it: global < group (later groups win) < host."""
        merged: dict[str, Any] = dict(self.global_data)
        for g in self.groups_of(host):
            merged.update(self.groups[g][1])
        merged.update(self.host_data[host])
        return merged

    def build(self, names: Iterable[str] | None = None, override_data: Mapping[str, Any] | None = None,
              base_data: Mapping[str, Any] | None = None) -> Any:
        """A fresh pyinfra `Inventory` with the given hosts (default: all); groups keep their members among them.

        `base_data` sits under the inventory's global data (lowest precedence, e.g. the default SSH key).
        """
        from pyinfra.api.inventory import Inventory  # pyinfra (paramiko, gevent) stays out of pure imports

        wanted = list(self.hosts) if names is None else [n for n in self.hosts if n in set(names)]
        groups = {g: ([n for n in members if n in wanted], dict(gdata)) for g, (members, gdata) in self.groups.items()}
        global_data = {**dict(base_data or {}), **self.global_data}
        return Inventory(([(n, dict(self.host_data[n])) for n in wanted], global_data),  # type: ignore[no-untyped-call]
                         override_data=dict(override_data or {}), **groups)


def _entry(path: Path, group: str, item: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(item, str):
        return item, {}
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], dict):
        return item[0], item[1]
    raise InventoryError(path, f"group {group!r}: entry {item!r} is neither a host name nor a (name, data) tuple")


def parse_inventory(namespace: Mapping[str, Any], path: Path | str,
                    allowed_keys: Iterable[str] | None = None) -> InventorySpec:
    """Turn the module namespace of an inventory file into an `InventorySpec`, checking shapes and data keys."""
    path = Path(path)
    allowed = CONNECTOR_KEYS | ARGUMENT_KEYS | MESHCTL_KEYS | frozenset(allowed_keys or ())
    groups: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {}
    host_data: dict[str, dict[str, Any]] = {}
    global_data: dict[str, Any] = {}
    for gname, value in namespace.items():
        if gname.startswith("_") or callable(value) or isinstance(value, type(runpy)):
            continue
        gdata: dict[str, Any]
        if isinstance(value, list):
            members, gdata = value, {}
        elif (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], list)
              and isinstance(value[1], dict)):
            members, gdata = value
        else:
            continue  # constants and helpers in the file are not groups
        names: list[str] = []
        for item in members:
            name, data = _entry(path, gname, item)
            if not name or name.startswith("@"):
                raise InventoryError(path, f"group {gname!r}: host {name!r}: meshctl deploys over SSH; "
                                     "give a host name (connector names such as @local are not supported)",
                                     host=name)
            if name in names:
                raise InventoryError(path, f"group {gname!r} lists host {name!r} twice", host=name)
            names.append(name)
            if name in host_data and data and host_data[name] and data != host_data[name]:
                raise InventoryError(path, f"host {name!r} is given two different data dicts",
                                     host=name, hint="give its host data once and list the bare name elsewhere")
            if data or name not in host_data:
                host_data[name] = dict(data)
        if gname == "all":
            global_data = dict(gdata)
        groups[gname] = (tuple(names), dict(gdata))
    groups.pop("all", None)
    for where, data in [*((f"host {h!r}", d) for h, d in host_data.items()),
                        *((f"group {g!r} data", gd) for g, (_, gd) in groups.items()),
                        ("global data", global_data)]:
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(key, sorted(allowed), n=1)
                raise InventoryError(path, f"{where}: unknown data key {key!r}", key=key,
                                     hint=f"did you mean {close[0]!r}?" if close else
                                     "see inventories/example.py for the keys meshctl and its roles read")
    return InventorySpec(path=path, groups=groups, host_data=host_data, global_data=global_data)


def resolves(name: str) -> bool:
    """True if `name` resolves to an address on this machine (the check a connect would make first)."""
    try:
        socket.getaddrinfo(name, 22, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    return True


def validate_inventory(spec: InventorySpec, resolve: Callable[[str], bool] = resolves) -> None:
    """Check what a deploy needs: the mesh groups, one control host, hosts that can be reached by name."""
    for g in REQUIRED_GROUPS:
        if g not in spec.groups:
            raise InventoryError(spec.path, f"no group {g!r} (want groups: control, nodes, and optionally derp)",
                                 hint=f"add e.g. `{g} = [\"host-name\"]`")
        if not spec.group(g):
            raise InventoryError(spec.path, f"group {g!r} is empty")
    if len(spec.group("control")) != 1:
        raise InventoryError(spec.path, f"group 'control' has {len(spec.group('control'))} hosts; want exactly 1")
    for host in spec.hosts:
        data = spec.data(host)
        if "ssh_hostname" not in data and not resolve(host):
            raise InventoryError(spec.path, f"host {host!r} does not resolve and has no ssh_hostname", host=host,
                                 hint="add ('NAME', {'ssh_hostname': 'ADDRESS'}) or fix its DNS name")
        region = data.get("derp_region")
        if region is not None and (not isinstance(region, int) or not 900 <= region <= 999):
            raise InventoryError(spec.path, f"host {host!r}: derp_region {region!r} is not a region id 900-999",
                                 host=host, key="derp_region")


def load_inventory(path: Path | str, *, allowed_keys: Iterable[str] | None = None,
                   resolve: Callable[[str], bool] = resolves) -> InventorySpec:
    """Execute an inventory file, parse and validate it. Raises `InventoryError` (one line) on any problem.

    `allowed_keys`: data keys accepted besides the connector's and meshctl's own; default: the roles' defaults.
    """
    if allowed_keys is None:
        from .roles import ROLE_ORDER, role_defaults  # the roles are loaded only when an inventory is

        allowed_keys = {key for role in ROLE_ORDER for key in role_defaults(role)}
    path = Path(path)
    if not path.is_file():
        raise InventoryError(path, f"no such file: {path}")
    try:
        namespace = runpy.run_path(str(path), run_name="meshctl_inventory")
    except InventoryError:
        raise
    except Exception as err:  # the file is user code: any exception is a broken inventory
        if isinstance(err, MeshctlError):  # e.g. the lab inventory when no lab is up: keep its own message
            raise
        raise InventoryError(path, f"executing it failed: {type(err).__name__}: {err}") from None
    spec = parse_inventory(namespace, path, allowed_keys)
    validate_inventory(spec, resolve)
    return spec
