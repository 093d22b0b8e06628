"""Command group `meshctl keys`: generate a key on this host (the private half stays in a 0600 file), show one."""

from __future__ import annotations

import os
import stat
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ..keys import PRIVATE_KINDS, PrivateKey, detect_private_key, write_private_key
from ..keys.errors import KeyFileError
from .output import console, emit_json

__all__ = ["keys_app", "register"]

keys_app = typer.Typer(help="Generate and inspect mesh keys.", no_args_is_help=True)


class KeyKind(str, Enum):
    machine = "machine"
    node = "node"
    disco = "disco"
    control = "control"
    derp = "derp"


def _describe(kind: str, key: PrivateKey, path: Path | None) -> dict[str, object]:
    pub = key.public_key()
    info: dict[str, object] = {
        "kind": kind,
        "public": pub.to_text(),
        "fingerprint": pub.short(),
    }
    if kind in ("node", "derp"):
        info["wireguard"] = pub.to_wireguard_base64()
    if path is not None:
        info["file"] = str(path)
        info["mode"] = f"{stat.S_IMODE(os.stat(path).st_mode):04o}"
    return info


@keys_app.command("generate")
def generate(
    kind: Annotated[KeyKind, typer.Argument(help="Which kind of key.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Private key file to write (0600).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Generate a key. The private half goes only to --out (0600); only the public half is printed."""
    cls = PRIVATE_KINDS[kind.value]
    key = cls.generate()
    if out is not None:
        if out.exists():
            raise KeyFileError(f"{out} already exists; refusing to overwrite a key file")
        write_private_key(out, key)
    info = _describe(kind.value, key, out)
    if json_out:
        emit_json(info)
    else:
        console.print(info["public"])


@keys_app.command("show")
def show(
    file: Annotated[Path, typer.Argument(help="A private key file.")],
    json_out: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Show a key file's public half, kind, fingerprint and mode (refuses a group/world-readable file)."""
    kind, key = detect_private_key(file)
    info = _describe(kind, key, file)
    if json_out:
        emit_json(info)
        return
    for k in ("kind", "public", "wireguard", "fingerprint", "file", "mode"):
        if k in info:
            console.print(f"{k + ':':13}{info[k]}")


@keys_app.command("audit")
def audit(
    inventory: Annotated[Path | None, typer.Option("--inventory", "-i", help="Also check each host's SSH host "
                                                                         "certificate (ssh-keyscan -c).")] = None,
    workspace: Annotated[Path | None, typer.Option("--workspace", help="Workspace directory.")] = None,
    control_url: Annotated[str | None, typer.Option("--control-url", help="Control server URL.")] = None,
    api_key_file: Annotated[Path | None, typer.Option("--api-key-file", help="Admin API key file.")] = None,
    check: Annotated[bool, typer.Option("--check", help="Exit 1 if anything is flagged.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """List every key the mesh knows (age, expiry, owner) and flag what is overdue by the rotation policy."""
    import time

    from ..errors import ConfigError, MeshctlError
    from ..rotate import audit as au
    from ..rotate.adminapi import admin_client, list_items, ssh_ca
    from ..rotate.sshexec import targets_from_inventory
    from ..workspace import RotationPolicy, find_workspace

    now = time.time()
    rows: list[au.KeyAudit] = []
    try:
        ws = find_workspace(workspace)
    except ConfigError:
        if workspace is not None:
            raise
        ws = None
    policy = ws.rotation if ws is not None else RotationPolicy()
    if ws is not None:
        rows += au.collect_workspace(ws, now)
    ca_key: str | None = None
    try:
        client = admin_client(control_url, api_key_file, workspace)
    except MeshctlError as err:
        rows.append(au.KeyAudit("control", "admin API", "", None, None, "unknown", str(err)))
    else:
        try:
            rows += [au.audit_node(n, now, policy) for n in list_items(client, "nodes")]
            rows += [au.audit_auth_key(k, now) for k in list_items(client, "authkeys")]
            rows += [au.audit_api_key(k, now) for k in list_items(client, "apikeys")]
            ca_key = str(ssh_ca(client.url)["publicKey"])
            rows.append(au.KeyAudit("ssh-ca", " ".join(ca_key.split()[:2])[-16:], "control host", None, None, "ok",
                                    "CA key stays on the control host; certificates it signs expire"))
        except MeshctlError as err:
            rows.append(au.KeyAudit("control", client.url, "", None, None, "unknown", str(err)))
        finally:
            client.close()
    if inventory is not None:
        rows += au.collect_host_certs(targets_from_inventory(inventory), now, policy, ca_key)
    flagged = [r for r in rows if r.flagged]
    if json_out:
        emit_json({"keys": [r.to_json(now) for r in rows], "flagged": len(flagged), "summary": au.summarize(rows)})
    else:
        for r in rows:
            mark = "!" if r.flagged else " "
            exp = au.KeyAudit.to_json(r, now)["expires"] or "-"
            console.print(f"{mark} {r.kind:<14} {r.name[:28]:<28} {r.status:<10} expires {exp:<20} {r.reason}")
        console.print(f"{len(rows)} keys, {len(flagged)} flagged")
    if check and flagged:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
