"""Command `meshctl init`: create an operator workspace (mesh.toml and a 0700 secrets/ with a deploy key)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..workspace import DEFAULT_DOMAIN, create_workspace
from .output import console

__all__ = ["register"]


def init(
    directory: Annotated[Path, typer.Argument(help="Directory for the new workspace.")],
    domain: Annotated[str, typer.Option("--domain", help="MagicDNS domain of the mesh.")] = DEFAULT_DOMAIN,
    name: Annotated[str, typer.Option("--name", help="Name of the mesh.")] = "mesh",
    control_url: Annotated[str | None, typer.Option("--control-url", help="URL nodes reach control at.")] = None,
) -> None:
    """Create an operator workspace; refuses to touch an existing one."""
    ws = create_workspace(directory, name=name, domain=domain, control_url=control_url)
    console.print(f"created workspace {ws.root}")
    console.print(f"  mesh.toml       name={ws.name} domain={ws.domain} control={ws.control_url}")
    console.print(f"  secrets/        0700; deploy key {ws.deploy_key.name} (+ .pub)")


def register(app: typer.Typer) -> None:
    app.command("init")(init)
