"""Command group `meshctl lab`: up, status, ssh, down, rootfs (a local fleet of systemd-nspawn hosts)."""

from __future__ import annotations

import subprocess
from typing import Annotated, Any

import typer

from ..lab import (
    INVENTORY_PATH,
    LabError,
    LabState,
    check_prerequisites,
    down,
    ensure_rootfs,
    health,
    load_state,
    parse_nat_options,
    up,
)
from .output import console, emit_json, err_console

__all__ = ["register"]

lab_app = typer.Typer(help="A disposable fleet of real Debian hosts on this machine (root, systemd-nspawn).",
                      no_args_is_help=True)  # fmt: skip

NameOpt = Annotated[str, typer.Option("--name", help="Lab name (several labs can run side by side).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def _progress(line: str) -> None:
    err_console.print(line, markup=False)


def _status_json(state: LabState) -> dict[str, Any]:
    data = state.to_json()
    running = {h.name: h.running for h in health(state)}
    for host in data["hosts"]:
        host["running"] = running[host["name"]]
    data["inventory"] = str(INVENTORY_PATH)
    return data


def _render(state: LabState) -> None:
    running = {h.name: h.running for h in health(state)}
    console.print(f"lab {state.name}: network {state.network}, state {state.state_path}")
    console.print(f"{'host':<9} {'role':<8} {'address':<16} {'public':<16} {'ssh':<21} {'nat':<5} state")
    for h in state.hosts:
        ssh = f"{h.ssh_hostname}:{h.ssh_port}"
        console.print(f"{h.name:<9} {h.role.value:<8} {h.address:<16} {h.public_address:<16} {ssh:<21} "
                      f"{h.nat.value:<5} {'running' if running[h.name] else 'DOWN'}")  # fmt: skip
    console.print(f"inventory: MESHCTL_LAB={state.name} {INVENTORY_PATH}")
    console.print(f"ssh: meshctl lab ssh HOST --name {state.name} [-- CMD]")


@lab_app.command("up")
def up_cmd(
    name: NameOpt = "lab",
    nodes: Annotated[int, typer.Option("--nodes", help="Number of nodes (node1…).")] = 3,
    derps: Annotated[int, typer.Option("--derps", help="Number of DERP hosts (derp1…).")] = 1,
    nat: Annotated[
        list[str] | None, typer.Option("--nat", help="NODE=easy|hard: put a node behind a NAT router.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Bring a lab up: control, DERP hosts and nodes booted with systemd, reachable over SSH."""
    try:
        nat_map = parse_nat_options(nat or [])
        state = up(name, nodes=nodes, derps=derps, nat=nat_map, progress=_progress)
    except ValueError as err:
        raise LabError(str(err)) from None
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in state.timings.items())
    _progress(f"lab {name} up ({timings}); state written to {state.state_path}")
    if json_out:
        emit_json(_status_json(state))
    else:
        _render(state)


@lab_app.command("status")
def status_cmd(name: NameOpt = "lab", json_out: JsonOpt = False) -> None:
    """Hosts, addresses, roles, NAT and whether each is running; the inventory path."""
    state = load_state(name)
    if json_out:
        emit_json(_status_json(state))
    else:
        _render(state)


@lab_app.command("ssh")
def ssh_cmd(
    host: Annotated[str, typer.Argument(help="Host name: control, derp1, node1, …")],
    command: Annotated[list[str] | None, typer.Argument(help="Command to run (after --); a shell if omitted.")] = None,
    name: NameOpt = "lab",
) -> None:
    """SSH into a lab host as root (strict host key checking); exits with the command's exit code."""
    state = load_state(name)
    argv = state.ssh_command(host, command or None)
    if not command:
        argv.insert(1, "-t")
    code = subprocess.run(argv, check=False).returncode
    raise typer.Exit(code=code)


@lab_app.command("down")
def down_cmd(name: NameOpt = "lab", json_out: JsonOpt = False) -> None:
    """Stop every host and remove every namespace, mount, link and file of the lab (fine if already down)."""
    report = down(name, progress=_progress)
    if json_out:
        emit_json(report.__dict__)


@lab_app.command("rootfs")
def rootfs_cmd(json_out: JsonOpt = False) -> None:
    """Build the cached Debian 12 rootfs (debootstrap, about a minute) or reuse it."""
    check_prerequisites()
    if not json_out:
        _progress("rootfs: checking the cache (a cold build runs debootstrap, about a minute)")
    rootfs = ensure_rootfs()
    if json_out:
        emit_json({"path": str(rootfs.path), "key": rootfs.key, "built": rootfs.built, "seconds": rootfs.seconds})
    else:
        console.print(f"rootfs: {'built' if rootfs.built else 'cached'} {rootfs.path} ({rootfs.seconds:.1f}s)")


def register(app: typer.Typer) -> None:
    """Attach this group's commands to the root app."""
    app.add_typer(lab_app, name="lab")
