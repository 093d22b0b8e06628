"""Command: `meshctl deploy -i INVENTORY` — provision the mesh onto a fleet with pyinfra, in-process."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..deploy import (
    DeployOptions,
    RichProgress,
    build_wheelhouse,
    known_data_keys,
    load_inventory,
    run_deploy,
    summary_table,
)
from ..deploy.workspaces import resolve_workspace
from .output import console, emit_json, err_console

__all__ = ["register"]


def deploy(
    inventory: Annotated[Path, typer.Option("--inventory", "-i", help="pyinfra inventory file (.py).")],
    limit: Annotated[str | None, typer.Option("--limit", help="Only these hosts (comma-separated names).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would change; change nothing.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable result on stdout.")] = False,
    workspace: Annotated[Path | None, typer.Option(
        "--workspace", "-w", help="Operator workspace (mesh.toml); a lab inventory defaults to the lab's.")] = None,
) -> None:
    """Deploy control, DERP and node roles onto the inventory's hosts; a re-run changes nothing."""
    spec = load_inventory(inventory, allowed_keys=known_data_keys())
    ws = resolve_workspace(spec, workspace)
    hosts = tuple(h.strip() for h in limit.split(",") if h.strip()) if limit else None
    spec.check_limit(hosts)
    wheelhouse = build_wheelhouse()
    options = DeployOptions(limit=hosts, dry_run=dry_run)
    with RichProgress(err_console, enabled=err_console.is_terminal) as progress:
        result = run_deploy(spec, ws, wheelhouse, options, progress)
    if json_out:
        emit_json(result.to_json())
    else:
        console.print(summary_table(result))
        if dry_run:
            for name, host in sorted(result.hosts.items()):
                for op in host.ops:
                    if op.changed:
                        console.print(f"would change: {name}: {op.role}: {op.name}", markup=False)
        for name in result.failed:
            err_console.print(f"failed: {name}: {result.hosts[name].error}", markup=False)
    if not result.ok:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Attach `meshctl deploy` to the root app."""
    app.command("deploy")(deploy)
