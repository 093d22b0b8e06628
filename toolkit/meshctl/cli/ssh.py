"""Command group `meshctl ssh`: sign-user (a short-lived user certificate), known-hosts (the CA trust line)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError
from ..keys.sshca import SshCertError, known_hosts_line, parse_certificate, parse_public_key
from ..rotate.adminapi import admin_client, control_url, sign_user_cert, ssh_ca
from ..workspace import find_workspace
from .output import console, emit_json

__all__ = ["register", "ssh_app"]

ssh_app = typer.Typer(help="SSH certificates from the mesh CA (no more trust on first use).", no_args_is_help=True)

WorkspaceOpt = Annotated[Path | None, typer.Option("--workspace", help="Workspace directory.")]
UrlOpt = Annotated[str | None, typer.Option("--control-url", help="Control server URL.")]
KeyFileOpt = Annotated[Path | None, typer.Option("--api-key-file", help="File holding an admin API key (0600).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON on stdout.")]


def cert_path_for(pubkey: Path) -> Path:
    """OpenSSH's convention: `id_ed25519.pub` → `id_ed25519-cert.pub` (ssh loads it with the key)."""
    return pubkey.with_name(pubkey.name.removesuffix(".pub") + "-cert.pub")


@ssh_app.command("sign-user")
def sign_user(
    pubkey: Annotated[Path, typer.Argument(help="The user's OpenSSH public key file (e.g. ~/.ssh/id_ed25519.pub).")],
    user: Annotated[str, typer.Option("--user", help="Who the certificate is for (goes into its key id).")],
    principal: Annotated[list[str], typer.Option("--principal", "-p", help="Account it may log in as (repeat).")],
    ttl: Annotated[str, typer.Option("--ttl", help="Validity, e.g. 8h, 30m (at most 7d).")] = "8h",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Where to write the certificate "
                                                                  "(default: <key>-cert.pub).")] = None,
    workspace: WorkspaceOpt = None,
    url: UrlOpt = None,
    api_key_file: KeyFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Have the mesh CA sign a user key (admin API); writes `<key>-cert.pub` next to it."""
    try:
        text = pubkey.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read {pubkey}: {e.strerror}") from None
    parse_public_key(text)  # refuse a private key or junk before anything is sent
    client = admin_client(url, api_key_file, workspace)
    try:
        result = sign_user_cert(client, text.strip(), user=user, principals=list(principal), ttl=ttl)
    finally:
        client.close()
    cert = str(result["certificate"])
    try:
        info = parse_certificate(cert)
    except SshCertError as err:
        raise SshCertError(f"control returned a bad certificate: {err}") from None
    target = out or cert_path_for(pubkey)
    target.write_text(cert + "\n")
    if json_out:
        emit_json({"certificate": str(target), "keyId": info.key_id, "serial": str(info.serial),
                   "principals": list(info.principals), "validAfter": info.valid_after,
                   "validBefore": info.valid_before})
    else:
        console.print(f"wrote {target}: {info.key_id}, principals {','.join(info.principals)}, "
                      f"valid for {info.validity // 60} min")


@ssh_app.command("known-hosts")
def known_hosts(
    ca_file: Annotated[Path | None, typer.Option("--ca-file", help="Build the line from this CA public key "
                                                                   "instead of asking the control server.")] = None,
    workspace: WorkspaceOpt = None,
    url: UrlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Print the `@cert-authority` line that makes ssh trust every mesh host the CA certified."""
    if ca_file is not None:
        ws = find_workspace(workspace)  # the domain and prefixes come from mesh.toml
        try:
            ca_line = ca_file.read_text().strip()
        except OSError as e:
            raise ConfigError(f"cannot read {ca_file}: {e.strerror}") from None
        line = known_hosts_line(ca_line, ws.domain, [str(ws.ipv4_prefix), str(ws.ipv6_prefix)])
    else:
        info = ssh_ca(control_url(url, workspace))
        ca_line, line = str(info["publicKey"]), str(info["knownHosts"])
    if json_out:
        emit_json({"knownHosts": line, "caPublicKey": ca_line})
    else:
        console.print(line)


def register(app: typer.Typer) -> None:
    """Attach this group's commands to the root app."""
    app.add_typer(ssh_app, name="ssh")
