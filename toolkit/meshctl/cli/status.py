"""Commands talking to the local agent: status, ping, netcheck (issue 5). Not implemented yet."""

from __future__ import annotations

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Attach this group's commands to the root app."""
