"""Command groups `meshctl users|nodes|authkeys|apikeys`: the admin API over HTTP.

Each command takes `--control-url`, `--api-key-file`, `--workspace` and `--json`; without them
it uses $MESHCTL_CONTROL_URL / $MESHCTL_API_KEY or the workspace (mesh.toml, secrets/api-key).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from ..control.admin_client import AdminClient, resolve_connection
from .output import console, emit_json

__all__ = ["register"]

UrlOpt = Annotated[str | None, typer.Option("--control-url", help="Control server URL.")]
KeyFileOpt = Annotated[Path | None, typer.Option("--api-key-file", help="File holding the admin API key (0600).")]
WsOpt = Annotated[Path | None, typer.Option("--workspace", help="Operator workspace directory.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON on stdout.")]

users_app = typer.Typer(help="Users that own nodes and auth keys.", no_args_is_help=True)
nodes_app = typer.Typer(help="Mesh nodes: list, show, rename, tag, expire, approve, delete.", no_args_is_help=True)
authkeys_app = typer.Typer(help="Pre-auth keys for registering nodes.", no_args_is_help=True)
apikeys_app = typer.Typer(help="Admin API keys.", no_args_is_help=True)


def _call(url: str | None, key_file: Path | None, ws: Path | None, method: str, path: str,
          body: dict[str, Any] | None = None) -> Any:
    client = AdminClient(*resolve_connection(url, key_file, ws))
    try:
        return client.call(method, path, body)
    finally:
        client.close()


def _render(data: Any, json_out: bool, line: Callable[[dict[str, Any]], str]) -> None:
    if json_out:
        emit_json(data)
        return
    for item in data if isinstance(data, list) else [data]:
        console.print(line(item))


def _node_line(n: dict[str, Any]) -> str:
    state = "expired" if n.get("expired") else ("online" if n.get("online") else "offline")
    if not n.get("machineAuthorized"):
        state = "pending"
    addrs = " ".join(a.split("/")[0] for a in n.get("addresses", []))
    tags = ",".join(n.get("tags", [])) or "-"
    return f"{n['id']:>5}  {n['name']:<24} {addrs:<40} {n.get('user') or '-':<12} {tags:<16} {state}"


def _key_line(k: dict[str, Any]) -> str:
    flags = [f for f in ("reusable", "ephemeral", "used", "revoked") if k.get(f)]
    extra = f"  key: {k['key']}" if "key" in k else ""
    return f"{k['id']}  {k.get('user', '')}  expires {k.get('expiresAt')}  {','.join(flags) or '-'}" + extra


# --- users ---------------------------------------------------------------------------------------
@users_app.command("list")
def users_list(control_url: UrlOpt = None, api_key_file: KeyFileOpt = None, workspace: WsOpt = None,
               json_out: JsonOpt = False) -> None:
    """List users."""
    _render(_call(control_url, api_key_file, workspace, "GET", "/users"), json_out,
            lambda u: f"{u['id']:>5}  {u['name']}")


@users_app.command("create")
def users_create(name: str, control_url: UrlOpt = None, api_key_file: KeyFileOpt = None, workspace: WsOpt = None,
                 json_out: JsonOpt = False) -> None:
    """Create a user."""
    _render(_call(control_url, api_key_file, workspace, "POST", "/users", {"name": name}), json_out,
            lambda u: f"created user {u['name']} (id {u['id']})")


@users_app.command("delete")
def users_delete(name: str, control_url: UrlOpt = None, api_key_file: KeyFileOpt = None, workspace: WsOpt = None,
                 json_out: JsonOpt = False) -> None:
    """Delete a user that owns no nodes."""
    _render(_call(control_url, api_key_file, workspace, "DELETE", f"/users/{name}"), json_out,
            lambda d: f"deleted user {d['deleted']}")


# --- nodes ---------------------------------------------------------------------------------------
@nodes_app.command("list")
def nodes_list(control_url: UrlOpt = None, api_key_file: KeyFileOpt = None, workspace: WsOpt = None,
               json_out: JsonOpt = False) -> None:
    """List nodes: id, name, addresses, user, tags, state."""
    _render(_call(control_url, api_key_file, workspace, "GET", "/nodes"), json_out, _node_line)


@nodes_app.command("show")
def nodes_show(node_id: int, control_url: UrlOpt = None, api_key_file: KeyFileOpt = None, workspace: WsOpt = None,
               json_out: JsonOpt = False) -> None:
    """Show one node."""
    data = _call(control_url, api_key_file, workspace, "GET", f"/nodes/{node_id}")
    if json_out:
        emit_json(data)
        return
    for k in ("id", "name", "fqdn", "user", "tags", "addresses", "nodeKey", "machineKey", "keyExpiry",
              "keyExpiryDisabled", "expired", "machineAuthorized", "ephemeral", "online", "lastSeen", "endpoints",
              "homeDerp"):
        console.print(f"{k + ':':<19} {data.get(k)}")


@nodes_app.command("rename")
def nodes_rename(node_id: int, name: str, control_url: UrlOpt = None, api_key_file: KeyFileOpt = None,
                 workspace: WsOpt = None, json_out: JsonOpt = False) -> None:
    """Rename a node (its MagicDNS name); names are unique."""
    _render(_call(control_url, api_key_file, workspace, "POST", f"/nodes/{node_id}/rename", {"name": name}),
            json_out, _node_line)


@nodes_app.command("tag")
def nodes_tag(node_id: int, tags: Annotated[list[str], typer.Argument(help="tag:<name> ... (replaces all tags)")],
              control_url: UrlOpt = None, api_key_file: KeyFileOpt = None, workspace: WsOpt = None,
              json_out: JsonOpt = False) -> None:
    """Set a node's tags."""
    _render(_call(control_url, api_key_file, workspace, "POST", f"/nodes/{node_id}/tags", {"tags": tags}),
            json_out, _node_line)


@nodes_app.command("expire")
def nodes_expire(node_id: int, control_url: UrlOpt = None, api_key_file: KeyFileOpt = None, workspace: WsOpt = None,
                 json_out: JsonOpt = False) -> None:
    """Expire a node's key now: it vanishes from every peer's map until it rotates."""
    _render(_call(control_url, api_key_file, workspace, "POST", f"/nodes/{node_id}/expire"), json_out, _node_line)


@nodes_app.command("key-expiry")
def nodes_key_expiry(node_id: int,
                     disable: Annotated[bool, typer.Option("--disable/--enable", help="Turn key expiry off or on.")],
                     control_url: UrlOpt = None, api_key_file: KeyFileOpt = None, workspace: WsOpt = None,
                     json_out: JsonOpt = False) -> None:
    """Disable or re-enable node key expiry for one node."""
    _render(_call(control_url, api_key_file, workspace, "POST", f"/nodes/{node_id}/key-expiry",
                  {"disabled": disable}), json_out, _node_line)


@nodes_app.command("approve")
def nodes_approve(node_id: int, user: Annotated[str | None, typer.Option("--user", help="Owner.")] = None,
                  control_url: UrlOpt = None, api_key_file: KeyFileOpt = None, workspace: WsOpt = None,
                  json_out: JsonOpt = False) -> None:
    """Approve a node that registered without an auth key."""
    _render(_call(control_url, api_key_file, workspace, "POST", f"/nodes/{node_id}/approve", {"user": user}),
            json_out, _node_line)


@nodes_app.command("delete")
def nodes_delete(node_id: int, control_url: UrlOpt = None, api_key_file: KeyFileOpt = None, workspace: WsOpt = None,
                 json_out: JsonOpt = False) -> None:
    """Delete a node (its addresses become free)."""
    _render(_call(control_url, api_key_file, workspace, "DELETE", f"/nodes/{node_id}"), json_out,
            lambda d: f"deleted node {d['deleted']}")


# --- auth keys -----------------------------------------------------------------------------------
@authkeys_app.command("list")
def authkeys_list(control_url: UrlOpt = None, api_key_file: KeyFileOpt = None, workspace: WsOpt = None,
                  json_out: JsonOpt = False) -> None:
    """List auth keys (ids only; secrets are never shown again)."""
    _render(_call(control_url, api_key_file, workspace, "GET", "/authkeys"), json_out, _key_line)


@authkeys_app.command("create")
def authkeys_create(
    user: Annotated[str | None, typer.Option("--user", help="Owner of the nodes it registers.")] = None,
    reusable: Annotated[bool, typer.Option("--reusable")] = False,
    ephemeral: Annotated[bool, typer.Option("--ephemeral")] = False,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="tag:<name>; repeatable.")] = None,
    expiry: Annotated[str, typer.Option("--expiry", help="e.g. 1h, 7d.")] = "1h",
    control_url: UrlOpt = None, api_key_file: KeyFileOpt = None, workspace: WsOpt = None, json_out: JsonOpt = False,
) -> None:
    """Create an auth key; its secret is printed once."""
    body = {"user": user, "reusable": reusable, "ephemeral": ephemeral, "tags": tag or [], "expiry": expiry}
    data = _call(control_url, api_key_file, workspace, "POST", "/authkeys", body)
    if json_out:
        emit_json(data)
    else:
        console.print(data["key"])


@authkeys_app.command("expire")
def authkeys_expire(key_id: str, control_url: UrlOpt = None, api_key_file: KeyFileOpt = None,
                    workspace: WsOpt = None, json_out: JsonOpt = False) -> None:
    """Expire an auth key by id."""
    _render(_call(control_url, api_key_file, workspace, "POST", f"/authkeys/{key_id}/expire"), json_out, _key_line)


# --- API keys ------------------------------------------------------------------------------------
@apikeys_app.command("list")
def apikeys_list(control_url: UrlOpt = None, api_key_file: KeyFileOpt = None, workspace: WsOpt = None,
                 json_out: JsonOpt = False) -> None:
    """List API keys (ids only)."""
    _render(_call(control_url, api_key_file, workspace, "GET", "/apikeys"), json_out,
            lambda k: f"{k['id']}  expires {k.get('expiresAt')}  {'revoked' if k.get('revoked') else 'active'}")


@apikeys_app.command("create")
def apikeys_create(expiry: Annotated[str, typer.Option("--expiry", help="e.g. 90d.")] = "90d",
                   control_url: UrlOpt = None, api_key_file: KeyFileOpt = None, workspace: WsOpt = None,
                   json_out: JsonOpt = False) -> None:
    """Create an API key; its secret is printed once."""
    data = _call(control_url, api_key_file, workspace, "POST", "/apikeys", {"expiry": expiry})
    if json_out:
        emit_json(data)
    else:
        console.print(data["key"])


@apikeys_app.command("expire")
def apikeys_expire(key_id: str, control_url: UrlOpt = None, api_key_file: KeyFileOpt = None,
                   workspace: WsOpt = None, json_out: JsonOpt = False) -> None:
    """Expire an API key by id."""
    _render(_call(control_url, api_key_file, workspace, "POST", f"/apikeys/{key_id}/expire"), json_out,
            lambda k: f"expired API key {k['id']}")


def register(app: typer.Typer) -> None:
    """Attach this group's commands to the root app."""
    app.add_typer(users_app, name="users")
    app.add_typer(nodes_app, name="nodes")
    app.add_typer(authkeys_app, name="authkeys")
    app.add_typer(apikeys_app, name="apikeys")
