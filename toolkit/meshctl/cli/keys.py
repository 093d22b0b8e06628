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


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
