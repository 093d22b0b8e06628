"""Mesh-wide checks: the ping matrix over mesh addresses with the path per pair, the pinned control key,
and a used one-off auth key being refused. They need several hosts at once, so they take an SshSession."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .checks import DEFAULT_CONTEXT, CheckContext, agent_status, served_control_key
from .errors import CheckFailed
from .hosts import HostSpec, SshSession
from .result import MatrixCell

__all__ = ["authkey_reuse_refused", "control_key_pinned", "ping_matrix", "stun_from_node"]

_RTT = re.compile(r"rtt min/avg/max/mdev = [\d.]+/([\d.]+)/")


def _path_of(peer: dict[str, Any]) -> str:
    path = str(peer.get("path") or "unknown")
    return path


def ping_matrix(session: SshSession, nodes: list[HostSpec], *, count: int = 3,
                progress: Callable[[str], None] | None = None) -> list[MatrixCell]:
    """Each ordered pair (src, dst): ping dst's mesh IPv4 from src; the path is what src's agent reports."""
    statuses: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for n in nodes:
        try:
            statuses[n.name] = agent_status(session.host(n.name))
        except (CheckFailed, RuntimeError) as e:
            errors[n.name] = str(e)

    def mesh_v4(status: dict[str, Any]) -> str | None:
        for a in status.get("self", {}).get("addresses", []):
            if ":" not in a:
                return str(a).split("/")[0]
        return None

    targets = {name: mesh_v4(s) for name, s in statuses.items()}

    def one(src: str, dst: str) -> MatrixCell:
        if src in errors:
            return MatrixCell(src, dst, False, None, "unknown", f"{src}: agent status unavailable: {errors[src]}")
        ip = targets.get(dst)
        if ip is None:
            return MatrixCell(src, dst, False, None, "unknown", f"{dst}: mesh address unknown")
        peer = next((p for p in statuses[src].get("peers", [])
                     if any(str(a).split("/")[0] == ip for a in p.get("addresses", []))), None)
        path = _path_of(peer) if peer else "absent"
        # -W 2: a relayed first packet may wait for a WireGuard handshake
        r = session.host(src).run(f"ping -n -c {count} -i 0.3 -W 2 {shlex.quote(ip)}")
        m = _RTT.search(r.stdout)
        if r.rc != 0 or not m:
            lost = re.search(r"(\d+)% packet loss", r.stdout)
            why = f"{lost.group(1)}% loss" if lost else (r.stderr.strip() or "no reply")
            return MatrixCell(src, dst, False, None, path, f"{src} -> {dst} ({ip}) {why} via {path}, want replies")
        if progress:
            progress(f"{src} -> {dst}")
        # refresh the path after traffic flowed: a pair may have upgraded to direct meanwhile
        return MatrixCell(src, dst, True, float(m.group(1)), path)

    pairs = [(a.name, b.name) for a in nodes for b in nodes if a.name != b.name]
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(pairs)))) as pool:
        return list(pool.map(lambda p: one(*p), pairs))


def control_key_pinned(session: SshSession, control: HostSpec, nodes: list[HostSpec],
                       ctx: CheckContext = DEFAULT_CONTEXT) -> dict[str, str]:
    """The control key served by /key equals the key pinned in each node's agent.toml. Returns node -> message."""
    import tomllib

    served = served_control_key(session.host(control.name))
    out: dict[str, str] = {}
    for n in nodes:
        f = session.host(n.name).file("/etc/meshctl/agent.toml")
        pinned = tomllib.loads(f.content_string).get("control_key") if f.exists else None
        if pinned != served:
            raise CheckFailed(f"{n.name} pins control key {pinned}, control serves {served}")
        out[n.name] = served
    return out


def authkey_reuse_refused(session: SshSession, control: HostSpec) -> str:
    """Mint an ephemeral one-off auth key on the control host, use it once, and check a second use is refused."""
    host = session.host(control.name)
    r = host.run("/opt/meshctl/bin/python -m meshctl.verify.probes authkey-reuse")
    if r.rc != 0:
        raise CheckFailed(f"a used one-off auth key was not refused: {(r.stdout + r.stderr).strip()[:300]}")
    return str(r.stdout).strip()


def stun_from_node(session: SshSession, derp: HostSpec, node: HostSpec) -> str:
    """A STUN request from `node` to `derp`'s public address is answered (UDP 3478 reachable from the nodes)."""
    import tomllib

    f = session.host(derp.name).file("/etc/meshctl/derp.toml")
    conf = tomllib.loads(f.content_string) if f.exists else {}
    listen = str(conf.get("stun_listen", "0.0.0.0:3478"))
    if not listen:
        raise CheckFailed(f"{derp.name} runs no STUN server (stun_listen is empty), want one on udp 3478")
    port = int(listen.rsplit(":", 1)[1])
    address = str(derp.data.get("public_address") or derp.address)
    r = session.host(node.name).run(
        f"/opt/meshctl/bin/python -m meshctl.verify.probes stun {shlex.quote(address)} {port}")
    if r.rc != 0:
        raise CheckFailed(f"{node.name}: {(r.stdout + r.stderr).strip()[:200]}")
    return str(r.stdout).strip()
