"""Command group `meshctl control`: serve the coordination server, and bootstrap commands run on its host.

`admin-key`, `authkey`, `derp-token`, `migrate` and `status` work on the store directly (the deploy
tooling runs them over SSH on the control host); each new secret is printed once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..control.config import ControlConfig, load_config
from ..workspace import parse_duration
from .output import console, emit_json

__all__ = ["control_app", "register"]

control_app = typer.Typer(help="Run the coordination server and manage its store locally.", no_args_is_help=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="Control config TOML (/etc/meshctl/control.toml).")]
StateOpt = Annotated[Path | None, typer.Option("--state-dir", help="State dir (control.key, control.db).")]
DbOpt = Annotated[str | None, typer.Option("--db", help="Database URL (default: sqlite control.db in the state dir).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON on stdout.")]


DEFAULT_CONFIG = Path("/etc/meshctl/control.toml")


def _config(config: Path | None, state_dir: Path | None, db: str | None) -> ControlConfig:
    """The config file (default /etc/meshctl/control.toml when it exists, so the bootstrap commands open the
    same database as the server), with --state-dir/--db on top."""
    if config is None and DEFAULT_CONFIG.is_file():
        config = DEFAULT_CONFIG
    return load_config(config).with_overrides(state_dir=state_dir, db=db)


@control_app.command("serve")
def serve(
    config: ConfigOpt = None,
    listen: Annotated[str | None, typer.Option("--listen", help="HOST:PORT (default 0.0.0.0:8080).")] = None,
    state_dir: StateOpt = None,
    db: DbOpt = None,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="TLS certificate (PEM).")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="TLS private key (PEM).")] = None,
) -> None:
    """Run the coordination server (creates the control key in the state dir on first start)."""
    from ..control.server import serve as run_server
    from ..errors import ConfigError

    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("--tls-cert and --tls-key must be given together")
    cfg = _config(config, state_dir, db).with_overrides(listen=listen, tls_cert=tls_cert, tls_key=tls_key)
    run_server(cfg)


@control_app.command("key")
def key(state_dir: StateOpt = None, config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Print the control public key (`control.pub`, written by the server at first start) for pinning."""
    from ..control.server import read_control_pub
    from ..errors import ConfigError

    cfg = _config(config, state_dir, None)
    try:
        pub = read_control_pub(cfg.state_dir)
    except FileNotFoundError:
        raise ConfigError(f"no control key in {cfg.state_dir} yet",
                          hint="start the server once (meshctl control serve) to create it") from None
    if json_out:
        emit_json({"controlKey": pub.to_text(), "stateDir": str(cfg.state_dir)})
    else:
        console.print(pub.to_text())


@control_app.command("admin-key")
def admin_key(
    state_dir: StateOpt = None, db: DbOpt = None, config: ConfigOpt = None,
    expiry: Annotated[str | None, typer.Option("--expiry", help="e.g. 90d (default: never).")] = None,
) -> None:
    """Create an admin API key directly in the store and print it once."""
    from ..control.local import create_admin_key

    seconds = None if expiry is None else float(parse_duration(expiry, "--expiry"))
    console.print(create_admin_key(_config(config, state_dir, db), seconds))


@control_app.command("authkey")
def authkey(
    state_dir: StateOpt = None, db: DbOpt = None, config: ConfigOpt = None,
    reusable: Annotated[bool, typer.Option("--reusable", help="May register many nodes.")] = False,
    ephemeral: Annotated[bool, typer.Option("--ephemeral", help="Nodes are deleted after going offline.")] = False,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="tag:<name>; repeatable.")] = None,
    expiry: Annotated[str, typer.Option("--expiry", help="How long the key is valid (e.g. 1h, 7d).")] = "1h",
    user: Annotated[str, typer.Option("--user", help="Owner of the nodes it registers.")] = "default",
    json_out: JsonOpt = False,
) -> None:
    """Create a pre-auth key directly in the store and print it once."""
    from ..control.local import create_auth_key

    info = create_auth_key(_config(config, state_dir, db), reusable=reusable, ephemeral=ephemeral, tags=tag or [],
                           expiry=float(parse_duration(expiry, "--expiry")), user=user)
    if json_out:
        emit_json(info)
    else:
        console.print(info["key"])


@control_app.command("derp-token")
def derp_token(state_dir: StateOpt = None, db: DbOpt = None, config: ConfigOpt = None) -> None:
    """Create a DERP admission token (for derper's verify-client-url) and print it once."""
    from ..control.local import create_derp_token

    console.print(create_derp_token(_config(config, state_dir, db)))


@control_app.command("migrate")
def migrate(
    state_dir: StateOpt = None, db: DbOpt = None, config: ConfigOpt = None,
    check: Annotated[bool, typer.Option("--check", help="Only check; exit 1 if the schema is not current.")] = False,
) -> None:
    """Apply pending schema migrations (append-only Alembic revisions shipped in meshctl)."""
    from ..control.local import run_migrate

    status = run_migrate(_config(config, state_dir, db), check=check)
    console.print(f"schema at {status.current} (head {status.head})" + ("" if check else ": up to date"))


@control_app.command("status")
def status(state_dir: StateOpt = None, db: DbOpt = None, config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Schema revision vs head, node counts and the control public key, read from the store."""
    from ..control.local import local_status

    st = local_status(_config(config, state_dir, db)).to_json()
    if json_out:
        emit_json(st)
        return
    current = "current" if st["schemaCurrent"] else "NOT current"
    console.print(f"schema:      {st['schemaRevision']} (head {st['schemaHead']}, {current})")
    console.print(f"nodes:       {st['nodes']} ({st['pending']} pending, {st['expiredButListed']} expired)")
    console.print(f"control key: {st['controlKey'] or '(not created yet)'}")


def register(app: typer.Typer) -> None:
    """Attach this group's commands to the root app."""
    app.add_typer(control_app, name="control")
