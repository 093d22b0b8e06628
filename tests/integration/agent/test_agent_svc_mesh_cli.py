"""`meshctl status|ping|netcheck` against real agents: three agents, a control server and a DERP relay in
network namespaces (the agent mesh harness), the CLI talking to each agent's real local API socket."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import pytest
from typer.testing import CliRunner

from meshctl.cli.app import app

from .agent_mesh_harness import HUB_IP, Mesh, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.root]

runner = CliRunner(env={"COLUMNS": "100"})


def meshctl(mesh: Mesh, agent: str, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, [*args, "--socket", str(mesh.agents[agent].socket)])
    return result.exit_code, result.stdout, result.stderr


def test_status_lists_every_peer_with_its_path_and_a_recent_handshake(mesh: Mesh) -> None:
    n1 = mesh.agents["n1"]
    for other in ("n2", "n3"):
        ip = mesh.agents[other].mesh_ip()
        wait_for(f"n1 pings {other}", partial(mesh.ping, n1, ip, count=1, timeout=2), timeout=30)

    def handshakes_seen() -> dict[str, Any] | None:  # the agent samples `wg show` every few seconds
        code, out, _ = meshctl(mesh, "n1", "status", "--json")
        assert code == 0
        found: dict[str, Any] = json.loads(out)
        return found if all(p["lastHandshake"] for p in found["peers"]) else None

    data = wait_for("n1's status shows handshakes with both peers", handshakes_seen, timeout=30)
    assert data["self"]["name"] == "n1"
    assert data["self"]["controlConnected"] is True
    peers = {p["name"]: p for p in data["peers"]}
    assert set(peers) == {"n2", "n3"}
    for peer in peers.values():
        assert peer["path"] == "direct" or peer["path"].startswith("relay(")
        assert peer["lastHandshake"] and peer["txBytes"] > 0

    code, out, _ = meshctl(mesh, "n1", "status")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("n1")
    for name in ("n2", "n3"):
        row = next(line for line in lines if line.startswith(name + " "))
        assert mesh.agents[name].mesh_ip() in row
        assert "s ago" in row or "m ago" in row


def test_ping_by_name_reports_round_trips_and_the_path(mesh: Mesh) -> None:
    wait_for("n1 has a direct path to n2", lambda: mesh.agents["n1"].peer("n2")["path"] == "direct", timeout=30)
    code, out, _ = meshctl(mesh, "n1", "ping", "n2", "--count", "2")
    assert code == 0, out
    lines = out.splitlines()
    assert len(lines) == 2
    ip = mesh.agents["n2"].mesh_ip()
    for seq, line in enumerate(lines):
        assert line.startswith(f"n2 ({ip}) via direct ")
        assert f"seq={seq} disco " in line and "icmp " in line and "timeout" not in line


def test_ping_by_mesh_ip_as_json(mesh: Mesh) -> None:
    ip = mesh.agents["n3"].mesh_ip()
    code, out, _ = meshctl(mesh, "n2", "ping", ip, "--count", "1", "--json")
    assert code == 0
    data = json.loads(out)
    assert (data["peer"], data["address"]) == ("n3", ip)
    assert data["results"][0]["icmpMs"] is not None


def test_ping_unknown_peer_is_one_error_line(mesh: Mesh) -> None:
    code, out, err = meshctl(mesh, "n1", "ping", "nobody")
    assert out == ""
    assert code == 1
    assert err.strip() == "error: no peer 'nobody' in this node's netmap (list peers with: meshctl status)"


def test_netcheck_finds_the_reflexive_address_through_the_relays_stun(mesh: Mesh) -> None:
    n1 = mesh.agents["n1"]
    code, out, _ = meshctl(mesh, "n1", "netcheck", "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data["udp"] is True
    assert data["preferredDerp"] == 900
    region = data["regions"][0]
    assert (region["regionId"], region["stun"]) == (900, f"{HUB_IP}:3478")
    assert region["reflexive"].startswith(f"{n1.ip}:")  # no NAT between the agent and the relay
    assert region["latencyMs"] is not None
    assert data["mappingVariesByDestIP"] is None  # one STUN server cannot tell
    code, out, _ = meshctl(mesh, "n1", "netcheck")
    assert code == 0
    assert "mapping varies by destination: unknown" in out
