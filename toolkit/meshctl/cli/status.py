"""Commands talking to the local agent over its socket: `meshctl status`, `meshctl ping`, `meshctl netcheck`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from ..agent import localclient
from ..agent.localapi import DEFAULT_SOCKET_PATH, MAX_PING_COUNT
from .output import console, emit_json

__all__ = ["ago", "human_bytes", "register", "render_netcheck", "render_ping", "render_status"]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
SocketOpt = Annotated[
    Path,
    typer.Option("--socket", envvar="MESHCTL_AGENT_SOCKET", help="The agent's local API socket."),
]


def ago(then: float | None, now: float) -> str:
    """'12s ago', '3m ago', '2h ago', '4d ago' or 'never'."""
    if not then:
        return "never"
    delta = max(0, int(now - then))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"{delta // size}{unit} ago"
    return f"{delta}s ago"


def human_bytes(count: int | None) -> str:
    value = float(count or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _expiry(expiry: float | None, now: float) -> str:
    if not expiry:
        return "key does not expire"
    left = int(expiry - now)
    if left <= 0:
        return "key EXPIRED"
    return f"key expires in {left // 86400}d" if left >= 86400 else f"key expires in {left // 3600}h"


def _ips(addresses: list[str] | None) -> str:
    """Mesh addresses without their /32 and /128 (the agent may report either form)."""
    return ", ".join(str(a).split("/", 1)[0] for a in addresses or [])


def render_status(data: dict[str, Any], now: float) -> tuple[str, Table]:
    """A one-line summary of this node and a table of its peers."""
    me = data.get("self") or {}
    control = "control connected" if me.get("controlConnected") else "control NOT connected (running on last netmap)"
    head = (
        f"{me.get('fqdn') or me.get('name', '?')}  {_ips(me.get('addresses'))}  "
        f"{me.get('nodeKey', '')}  {_expiry(me.get('keyExpiry'), now)}  {control}"
    )
    rows = [
        (
            str(peer.get("name", "?")),
            _ips(peer.get("addresses")),
            str(peer.get("path") or "-"),
            str(peer.get("endpoint") or "-"),
            ago(peer.get("lastHandshake"), now),
            human_bytes(peer.get("rxBytes")),
            human_bytes(peer.get("txBytes")),
            "yes" if peer.get("online") else "no",
        )
        for peer in sorted(data.get("peers") or [], key=lambda p: str(p.get("name", "")))
    ]
    return head, _table(("PEER", "MESH IPS", "PATH", "ENDPOINT", "HANDSHAKE", "RX", "TX", "ONLINE"), rows)


def _table(columns: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> Table:
    """A borderless table whose cells are never cut short, however narrow the terminal."""
    table = Table(box=None, pad_edge=False, show_edge=False)
    for i, column in enumerate(columns):
        widest = max([len(column), *(len(row[i]) for row in rows)])
        table.add_column(column, no_wrap=True, min_width=widest)
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    return table


def _ms(value: float | None) -> str:
    return f"{value:.2f} ms" if value is not None else "timeout"


def render_ping(data: dict[str, Any]) -> list[str]:
    lines = []
    target = f"{data.get('peer', '?')} ({data.get('address', '?')})"
    path = str(data.get("path") or "?")
    via = f"{path} {data['endpoint']}" if data.get("endpoint") and path == "direct" else path
    for result in data.get("results") or []:
        lines.append(f"{target} via {via}: seq={result.get('seq')} disco {_ms(result.get('discoMs'))}, "
                     f"icmp {_ms(result.get('icmpMs'))}")
    return lines


def _answered(data: dict[str, Any]) -> int:
    return sum(1 for r in data.get("results") or [] if r.get("discoMs") is not None or r.get("icmpMs") is not None)


def render_netcheck(data: dict[str, Any]) -> tuple[list[str], Table]:
    varies = data.get("mappingVariesByDestIP")
    nat = {True: "yes (hard NAT: direct paths need the other side to be reachable)", False: "no (easy NAT or none)",
           None: "unknown (fewer than two STUN servers answered)"}[varies]
    head = [
        f"UDP: {'yes' if data.get('udp') else 'NO (only DERP relays will work)'}",
        f"reflexive address: {data.get('globalAddr') or '-'}",
        f"mapping varies by destination: {nat}",
        f"nearest DERP region: {data.get('preferredDerp') if data.get('preferredDerp') is not None else '-'}",
    ]
    rows = [
        (
            f"{region.get('regionId')} {region.get('regionCode', '')}".strip(),
            str(region.get("node") or "-"),
            str(region.get("stun") or "-"),
            str(region.get("reflexive") or "-"),
            f"{latency:.1f} ms" if (latency := region.get("latencyMs")) is not None
            else f"failed: {region.get('error') or 'no answer'}",
        )
        for region in data.get("regions") or []
    ]
    return head, _table(("REGION", "NODE", "STUN", "REFLEXIVE", "LATENCY"), rows)


def status_command(json_out: JsonOpt = False, socket: SocketOpt = DEFAULT_SOCKET_PATH) -> None:
    """Show this node and each peer: mesh IPs, path (direct or relay), endpoint, last handshake, traffic."""
    data = localclient.status(socket)
    if json_out:
        emit_json(data)
        return
    head, table = render_status(data, time.time())
    console.print(head)
    if data.get("peers"):
        console.print(table)
    else:
        console.print("no peers (the policy lets this node reach nobody, or the netmap is not here yet)")


def ping_command(
    peer: Annotated[str, typer.Argument(help="Peer name, FQDN or mesh IP.")],
    count: Annotated[int, typer.Option("--count", "-c", min=1, max=MAX_PING_COUNT, help="Probes to send.")] = 3,
    json_out: JsonOpt = False,
    socket: SocketOpt = DEFAULT_SOCKET_PATH,
) -> None:
    """Disco and ICMP round trips to a peer, and the path they took. Exit 1 when nothing came back."""
    data = localclient.ping(socket, peer, count)
    if json_out:
        emit_json(data)
    else:
        for line in render_ping(data):
            console.print(line)
    if _answered(data) == 0:
        if not json_out:
            console.print(f"no answer from {peer} to {count} probe(s)")
        raise typer.Exit(code=1)


def netcheck_command(json_out: JsonOpt = False, socket: SocketOpt = DEFAULT_SOCKET_PATH) -> None:
    """STUN to each DERP region from the agent's socket: reflexive address, latency, hard NAT or not."""
    data = localclient.netcheck(socket)
    if json_out:
        emit_json(data)
        return
    head, table = render_netcheck(data)
    for line in head:
        console.print(line)
    console.print(table)


def register(app: typer.Typer) -> None:
    """Attach `status`, `ping` and `netcheck` to the root app."""
    app.command("status")(status_command)
    app.command("ping")(ping_command)
    app.command("netcheck")(netcheck_command)
