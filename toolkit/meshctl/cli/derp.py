"""Command group `meshctl derp`: run a DERP relay + STUN server, and probe one.

    meshctl derp serve [--config FILE] [--listen HOST:PORT] [--stun-listen HOST:PORT] [--key-file F]
                       [--region-id N] [--tls-cert F --tls-key F] [--verify-url URL --verify-token-file F]
                       [--verify-fail-open] [--mesh-with URL,... --mesh-key-file F]
    meshctl derp ping URL [--server-key nodekey:…] [--count N] [--json]
    meshctl derp stun HOST[:PORT] [--json]
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer

from ..derp.config import load_config, parse_hostport
from ..keys import DerpPublicKey, NodePrivateKey
from .output import console, emit_json

__all__ = ["derp_app", "register"]

derp_app = typer.Typer(help="DERP relay and STUN server.", no_args_is_help=True)


@derp_app.command("serve")
def serve(
    config: Annotated[Path | None, typer.Option("--config", help="TOML config (e.g. /etc/meshctl/derp.toml).")] = None,
    listen: Annotated[str | None, typer.Option("--listen", help="DERP HTTP(S) address [0.0.0.0:443].")] = None,
    stun_listen: Annotated[str | None, typer.Option("--stun-listen", help="STUN UDP address [0.0.0.0:3478]; "
                                                    "'' disables.")] = None,
    key_file: Annotated[Path | None, typer.Option("--key-file", help="DERP private key (JSON, 0600; created "
                                                  "if missing) [/var/lib/meshctl/derp/derp.key].")] = None,
    region_id: Annotated[int | None, typer.Option("--region-id", help="Region id (900-999 for own relays).")] = None,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="TLS certificate chain (PEM).")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="TLS private key (PEM).")] = None,
    verify_url: Annotated[str | None, typer.Option("--verify-url", help="Admission URL, e.g. "
                                                   "http://control:8080/derp/verify.")] = None,
    verify_token_file: Annotated[Path | None, typer.Option("--verify-token-file", help="DERP token for the "
                                                           "admission URL (0600).")] = None,
    verify_fail_open: Annotated[bool | None, typer.Option("--verify-fail-open/--verify-fail-closed",
                                                          help="Admit clients when the admission URL fails "
                                                          "[fail-closed].")] = None,
    mesh_with: Annotated[str | None, typer.Option("--mesh-with", help="Comma-separated DERP URLs of the "
                                                  "region's other relays.")] = None,
    mesh_key_file: Annotated[Path | None, typer.Option("--mesh-key-file", help="Mesh key file (64 hex, 0600).")]
    = None,
) -> None:
    """Run a DERP relay with a STUN server beside it, until SIGINT/SIGTERM."""
    from ..derp.service import run

    cfg = load_config(config, {
        "listen": listen, "stun_listen": stun_listen, "key_file": str(key_file) if key_file else None,
        "region_id": region_id, "tls_cert": str(tls_cert) if tls_cert else None,
        "tls_key": str(tls_key) if tls_key else None, "verify_url": verify_url,
        "verify_token_file": str(verify_token_file) if verify_token_file else None,
        "verify_fail_open": verify_fail_open, "mesh_with": mesh_with,
        "mesh_key_file": str(mesh_key_file) if mesh_key_file else None,
    })
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(cfg)


@derp_app.command("ping")
def ping(
    url: Annotated[str, typer.Argument(help="DERP URL, e.g. https://derp1.example.com/derp.")],
    server_key: Annotated[str | None, typer.Option("--server-key", help="Expected server key (nodekey:…).")] = None,
    count: Annotated[int, typer.Option("--count", "-c", help="Pings to send.")] = 3,
    insecure: Annotated[bool, typer.Option("--insecure", help="Do not verify the TLS certificate.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Connect with a throw-away node key, handshake, and measure DERP ping round trips."""
    from ..derp.client import DerpClient

    pinned = DerpPublicKey.from_text(server_key) if server_key else None

    async def go() -> tuple[str, list[float]]:
        ctx = None
        if insecure:
            import ssl

            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        client = DerpClient(url, NodePrivateKey.generate(), server_key=pinned, ssl_context=ctx,
                            app_name="meshctl-derp-ping")
        await client.connect()
        try:
            rtts = [await client.ping() for _ in range(max(1, count))]
        finally:
            await client.close()
        assert client.server_public_key is not None
        return client.server_public_key.to_text(), rtts

    key, rtts = asyncio.run(go())
    if json_out:
        emit_json({"url": url, "serverKey": key, "rttMs": [round(r * 1000, 3) for r in rtts]})
        return
    console.print(f"{url}: server key {key}")
    for r in rtts:
        console.print(f"pong in {r * 1000:.2f} ms")


@derp_app.command("stun")
def stun(
    server: Annotated[str, typer.Argument(help="STUN server HOST[:PORT] (port 3478 by default).")],
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait.")] = 3.0,
    json_out: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Ask a STUN server for this host's reflexive address."""
    from ..stun.client import probe_blocking

    if server.startswith("[") or server.count(":") == 1:  # host:port or [v6]:port
        host, port = parse_hostport(server, "STUN server")
    else:  # a bare name, IPv4 or IPv6 address
        host, port = server, 3478
    ip, mapped_port = probe_blocking(host, port, timeout=timeout)
    if json_out:
        emit_json({"server": f"{host}:{port}", "ip": ip, "port": mapped_port})
    else:
        console.print(f"{ip}:{mapped_port}")


def register(app: typer.Typer) -> None:
    """Attach this group's commands to the root app."""
    app.add_typer(derp_app, name="derp")
