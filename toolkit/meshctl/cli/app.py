"""The root `meshctl` Typer application: joins the command groups and turns errors into one line."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from .. import __version__
from ..errors import MeshctlError
from . import admin, agent, control, deploy, derp, keys, lab, rotate, ssh, status, verify, workspace
from .output import render_error

__all__ = ["app", "main"]


class _Group(TyperGroup):
    """Root group: a MeshctlError anywhere below becomes one line on stderr and exit code 1."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except MeshctlError as err:
            render_error(err)
            raise typer.Exit(code=1) from None


app = typer.Typer(
    name="meshctl",
    cls=_Group,
    help="Build a Tailscale-style WireGuard mesh VPN on hosts you own, and keep it healthy.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    # help texts mention paths like [/var/lib/...]: never parse them as rich markup
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"meshctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """meshctl: control plane, DERP relays, node agents, deployment, verification and key rotation."""


for _module in (workspace, keys, control, admin, derp, agent, status, lab, deploy, verify, rotate, ssh):
    _module.register(app)


def main() -> None:
    """Console-script entry point."""
    app()
