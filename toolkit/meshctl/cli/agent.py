"""Command group `meshctl agent`: run the node agent daemon (status/ping/netcheck live in cli/status.py)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register"]

agent_app = typer.Typer(help="The node agent: joins this host to the mesh.", no_args_is_help=True)


@agent_app.command("run")
def run(
    config: Annotated[Path, typer.Option("--config", "-c", help="Agent config (TOML).")] = Path(
        "/etc/meshctl/agent.toml"),
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Run the agent in the foreground until SIGTERM/SIGINT (the interface is removed on a clean stop)."""
    from ..agent.config import load_config
    from ..agent.daemon import run_agent

    cfg = load_config(config)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    asyncio.run(run_agent(cfg))


def register(app: typer.Typer) -> None:
    """Attach this group's commands to the root app."""
    app.add_typer(agent_app, name="agent")
