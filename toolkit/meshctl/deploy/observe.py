"""Looking at a deployed lab mesh from the operator side, over SSH: node status, mesh addresses, ping matrix.

Used by `make demo`, the deploy e2e tests and the deploy benchmark. Each call runs commands on lab hosts
with the lab's own SSH options (`LabState.run`); nothing here changes a host.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..lab import LabState

__all__ = ["PingResult", "mesh_ipv4", "node_status", "ping_matrix", "wait_for_mesh"]

MESHCTL = "/opt/meshctl/bin/meshctl"


@dataclass(frozen=True)
class PingResult:
    src: str
    dst: str
    address: str
    ok: bool


def node_status(lab: LabState, node: str) -> dict[str, Any] | None:
    """`meshctl status --json` of one node (None when the agent does not answer)."""
    proc = lab.run(node, f"{MESHCTL} status --json", timeout=20)
    if proc.returncode != 0:
        return None
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def mesh_ipv4(status: dict[str, Any]) -> str | None:
    for address in (status.get("self") or {}).get("addresses") or []:
        text = str(address).split("/")[0]
        if "." in text:
            return text
    return None


def _parallel(fn: Callable[[str], Any], names: Sequence[str]) -> dict[str, Any]:
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        return dict(zip(names, pool.map(fn, names), strict=True))


def wait_for_mesh(lab: LabState, nodes: Sequence[str], timeout: float = 90.0,
                  clock: Callable[[], float] = time.monotonic) -> dict[str, dict[str, Any]]:
    """Poll until every node's agent answers with a mesh address and lists every other node as a peer.

    Returns the last statuses seen (possibly incomplete when `timeout` passed).
    """
    deadline = clock() + timeout
    statuses: dict[str, dict[str, Any]] = {}
    while True:
        got = _parallel(lambda n: node_status(lab, n), nodes)
        statuses = {n: s for n, s in got.items() if s is not None}
        complete = len(statuses) == len(nodes) and all(
            mesh_ipv4(s) and {str(p.get("name", "")).split(".")[0] for p in s.get("peers") or []}
            >= {m for m in nodes if m != n} for n, s in statuses.items())
        if complete or clock() >= deadline:
            return statuses
        time.sleep(1.0)


def ping_matrix(lab: LabState, addresses: dict[str, str], count: int = 3) -> list[PingResult]:
    """Every node pings every other node's mesh IPv4 (a few tries each: a relayed first packet may be slow)."""
    pairs = [(src, dst) for src in addresses for dst in addresses if src != dst]

    def one(pair: tuple[str, str]) -> PingResult:
        src, dst = pair
        proc = lab.run(src, f"ping -c 1 -W 2 {addresses[dst]} >/dev/null 2>&1 || "
                            f"ping -c {count} -i 0.5 -W 2 {addresses[dst]} >/dev/null 2>&1", timeout=30)
        return PingResult(src, dst, addresses[dst], proc.returncode == 0)

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, pairs))
