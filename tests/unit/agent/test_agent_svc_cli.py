"""`meshctl status|ping|netcheck` against a real local API server on a temp socket (typer's CliRunner)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from meshctl.cli.app import app
from meshctl.cli.status import ago, human_bytes, render_status

from .test_agent_svc_support import NOW, STATUS, FakeBackend, ServerThread, agent, backend, short_dir

__all__ = ["agent", "backend", "short_dir"]  # fixtures

runner = CliRunner(env={"COLUMNS": "80"})  # narrow: cells must still be whole


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_status_table_shows_each_peer_path_endpoint_handshake_and_traffic(agent: ServerThread) -> None:
    code, out, _ = run("status", "--socket", str(agent.socket_path))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("alpha.corp.mesh  100.64.0.1, fd7a:115c:a1e0::1  nodekey:a1b2c3d4")
    assert "control connected" in lines[0]
    header = next(line for line in lines if line.startswith("PEER"))
    assert header.split() == ["PEER", "MESH", "IPS", "PATH", "ENDPOINT", "HANDSHAKE", "RX", "TX", "ONLINE"]
    beta = next(line for line in lines if line.startswith("beta"))
    assert "direct" in beta and "192.0.2.10:41641" in beta and "5.0 MiB" in beta and beta.rstrip().endswith("yes")
    gamma = next(line for line in lines if line.startswith("gamma"))
    assert "relay(lab)" in gamma and "never" in gamma and gamma.rstrip().endswith("no")


def test_status_json_is_the_agents_answer(agent: ServerThread) -> None:
    code, out, _ = run("status", "--json", "--socket", str(agent.socket_path))
    assert code == 0
    assert json.loads(out) == STATUS


def test_status_without_agent_is_one_error_line_with_the_hint(short_dir: Path) -> None:
    code, out, err = run("status", "--socket", str(short_dir / "agent.sock"))
    assert code == 1
    assert out == ""
    assert err.strip().splitlines() == [
        f"error: the meshctl agent is not running ({short_dir / 'agent.sock'}: no such socket) "
        "(check it with: systemctl status meshctl-agent)"
    ]


def test_ping_prints_one_line_per_probe_with_the_path(agent: ServerThread, backend: FakeBackend) -> None:
    code, out, _ = run("ping", "beta", "--count", "2", "--socket", str(agent.socket_path))
    assert code == 0
    assert backend.pings == [("beta", 2)]
    assert out.splitlines() == [
        "beta (100.64.0.2) via direct 192.0.2.10:41641: seq=0 disco 0.50 ms, icmp 0.70 ms",
        "beta (100.64.0.2) via direct 192.0.2.10:41641: seq=1 disco 1.50 ms, icmp 1.70 ms",
    ]


def test_ping_with_no_answer_exits_1(agent: ServerThread, backend: FakeBackend) -> None:
    backend.lost_pings = True
    code, out, _ = run("ping", "gamma", "-c", "1", "--socket", str(agent.socket_path))
    assert code == 1
    assert out.splitlines() == [
        "gamma (100.64.0.3) via relay(lab): seq=0 disco timeout, icmp timeout",
        "no answer from gamma to 1 probe(s)",
    ]


def test_ping_unknown_peer_and_bad_count(agent: ServerThread) -> None:
    code, _, err = run("ping", "nobody", "--socket", str(agent.socket_path))
    assert code == 1
    assert err.strip() == "error: no peer 'nobody' in this node's netmap (list peers with: meshctl status)"
    code, _, err = run("ping", "beta", "--count", "0", "--socket", str(agent.socket_path))
    assert code == 2
    assert "--count" in err


def test_ping_json(agent: ServerThread) -> None:
    code, out, _ = run("ping", "100.64.0.2", "-c", "1", "--json", "--socket", str(agent.socket_path))
    assert code == 0
    assert json.loads(out)["peer"] == "beta"


def test_netcheck_reports_reflexive_address_latency_and_hard_nat(agent: ServerThread) -> None:
    code, out, _ = run("netcheck", "--socket", str(agent.socket_path))
    assert code == 0
    lines = out.splitlines()
    assert lines[:4] == [
        "UDP: yes",
        "reflexive address: 198.51.100.7:41641",
        "mapping varies by destination: yes (hard NAT: direct paths need the other side to be reachable)",
        "nearest DERP region: 900",
    ]
    lab = next(line for line in lines if line.startswith("900 lab"))
    assert "198.51.100.7:41641" in lab and "1.5 ms" in lab
    far = next(line for line in lines if line.startswith("901 far"))
    assert "failed: no STUN answer" in far


def test_socket_can_come_from_the_environment(agent: ServerThread) -> None:
    result = runner.invoke(app, ["status", "--json"], env={"MESHCTL_AGENT_SOCKET": str(agent.socket_path)})
    assert result.exit_code == 0
    assert json.loads(result.stdout)["self"]["name"] == "alpha"


def test_ago_and_bytes_formatting() -> None:
    assert [ago(NOW - d, NOW) for d in (0, 12, 125, 7300, 90000)] == ["0s ago", "12s ago", "2m ago", "2h ago",
                                                                      "1d ago"]
    assert ago(None, NOW) == "never"
    assert [human_bytes(n) for n in (0, 1023, 2048, 5 * 1024**3)] == ["0 B", "1023 B", "2.0 KiB", "5.0 GiB"]


def test_expired_key_and_lost_control_are_visible() -> None:
    data = {"self": dict(STATUS["self"], keyExpiry=NOW - 1, controlConnected=False), "peers": []}
    head, _ = render_status(data, NOW)
    assert "key EXPIRED" in head
    assert "control NOT connected (running on last netmap)" in head
