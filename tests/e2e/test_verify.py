"""e2e: `meshctl verify` on a deployed lab passes, then names the fault and the host when things break.

Runs after the deploy tests on the shared session lab (tests/e2e/conftest.py). Each fault is undone
before the next test, except the last (an expired node key), which is why it runs last.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
MESHCTL = str(Path(sys.executable).parent / "meshctl")
INVENTORY = str(REPO / "inventories" / "lab.py")


def run(*argv: str, check: bool = False, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=check,
                          env=os.environ | {"CI": "true"})


def on(host: str, cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = run(MESHCTL, "lab", "ssh", host, "--name", os.environ["MESHCTL_LAB"], "--", "sh", "-c", cmd)
    if check and r.returncode != 0:
        raise AssertionError(f"{host}: `{cmd}` exit {r.returncode}: {r.stderr.strip()}")
    return r


def verify(*extra: str) -> tuple[int, dict[str, Any]]:
    r = run(MESHCTL, "verify", "-i", INVENTORY, "--json", *extra)
    assert r.stdout.strip(), f"verify printed nothing: {r.stderr}"
    return r.returncode, json.loads(r.stdout)


def failures(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(c["host"], c["check"], c["message"]) for c in report["checks"] if c["outcome"] == "fail"]


def cell(report: dict[str, Any], src: str, dst: str) -> dict[str, Any]:
    return next(c for c in report["matrix"] if c["src"] == src and c["dst"] == dst)


def wait_until(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture(scope="module")
def deployed(lab: Any) -> Any:
    r = run(MESHCTL, "deploy", "-i", INVENTORY, "--json")
    assert r.returncode == 0, f"deploy failed: {r.stderr[-2000:]}"
    # every pair must be up before the faults start: poll verify until healthy
    state: dict[str, Any] = {}

    def healthy() -> bool:
        rc, rep = verify()
        state["last"] = rep
        return rc == 0

    wait_until(healthy, 180, f"a healthy mesh; last failures: {state.get('last') and failures(state['last'])}")
    return lab


def test_verify_passes_after_deploy(deployed: Any) -> None:
    rc, rep = verify()
    assert rc == 0 and rep["ok"], failures(rep)
    checked = {(c["host"], c["check"]) for c in rep["checks"]}
    for host, check in [("control", "control healthz"), ("control", "db schema"), ("derp1", "derp 426"),
                        ("derp1", "derp admission"), ("node1", "handshakes"), ("node3", "magicdns"),
                        ("control", "used auth key refused"), ("control", "control key pinned on nodes")]:
        assert (host, check) in checked
    assert all(c["reachable"] for c in rep["matrix"])
    assert len(rep["matrix"]) == 6  # 3 nodes, each ordered pair


def test_stopped_agent_is_named(deployed: Any) -> None:
    on("node1", "systemctl stop meshctl-agent")
    try:
        rc, rep = verify("--limit", "node1", "--no-matrix")
        assert rc == 1
        assert any(h == "node1" and c == "agent service" and "inactive" in m for h, c, m in failures(rep)), \
            failures(rep)
    finally:
        on("node1", "systemctl start meshctl-agent")
    wait_until(lambda: verify("--limit", "node1", "--no-matrix")[0] == 0, 90, "node1's agent back")


def test_world_readable_key_is_named(deployed: Any) -> None:
    on("node2", "chmod 0644 /var/lib/meshctl/agent/machine.key")
    try:
        rc, rep = verify("--limit", "node2", "--no-matrix")
        assert rc == 1
        msgs = [m for h, c, m in failures(rep) if h == "node2" and c == "secret modes"]
        assert msgs and "/var/lib/meshctl/agent/machine.key is 0644" in msgs[0] and "want 0600" in msgs[0]
    finally:
        on("node2", "chmod 0600 /var/lib/meshctl/agent/machine.key")


def _public_address(lab: Any, name: str) -> str:
    state = json.loads(run(MESHCTL, "lab", "status", "--name", os.environ["MESHCTL_LAB"], "--json",
                           check=True).stdout)
    host = next(h for h in state["hosts"] if h["name"] == name)
    return str(host["public_address"])


def test_blocked_udp_pair_is_relayed_not_failed(deployed: Any) -> None:
    peer = _public_address(deployed, "node2")
    block = (f"nft add table inet e2eblock && nft add chain inet e2eblock out '{{ type filter hook output "
             f"priority 0; }}' && nft add rule inet e2eblock out ip daddr {peer} udp dport != 3478 drop && "
             f"nft add chain inet e2eblock in '{{ type filter hook input priority 0; }}' && "
             f"nft add rule inet e2eblock in ip saddr {peer} udp sport != 3478 drop")
    on("node1", block)
    try:
        def relayed() -> bool:
            _rc, rep = verify("--limit", "node1,node2")
            c = cell(rep, "node1", "node2")
            return bool(c["reachable"] and c["path"].startswith("relay"))

        wait_until(relayed, 120, "node1 -> node2 to fall back to DERP")
        _rc, rep = verify("--limit", "node1,node2")
        assert cell(rep, "node2", "node1")["reachable"]
    finally:
        on("node1", "nft delete table inet e2eblock", check=False)


def test_derp_down_fails_only_the_nat_pair(deployed: Any) -> None:
    on("derp1", "systemctl stop meshctl-derp")
    try:
        def nat_pair_down() -> bool:
            _rc, rep = verify()
            return not cell(rep, "node2", "node3")["reachable"]

        wait_until(nat_pair_down, 120, "node2 <-> node3 (both NATed) to lose their only path")
        rc, rep = verify()
        assert rc == 1
        assert any(h == "derp1" and c == "derp service" for h, c, _ in failures(rep))
        assert not cell(rep, "node3", "node2")["reachable"]
        for src, dst in [("node1", "node2"), ("node2", "node1"), ("node1", "node3"), ("node3", "node1")]:
            assert cell(rep, src, dst)["reachable"], cell(rep, src, dst)
    finally:
        on("derp1", "systemctl start meshctl-derp")
    wait_until(lambda: verify()[0] == 0, 180, "the mesh to heal after DERP is back")


def test_expired_node_key_is_named(deployed: Any) -> None:
    api_key = on("control", "/opt/meshctl/bin/meshctl control admin-key --state-dir /var/lib/meshctl/control"
                 ).stdout.strip().split()[-1]
    on("control", f"umask 077; printf %s {api_key} > /root/e2e-api-key")
    admin = "--control-url http://127.0.0.1:8080 --api-key-file /root/e2e-api-key"
    listed = json.loads(on("control", f"/opt/meshctl/bin/meshctl nodes list --json {admin}").stdout)
    nodes = listed["nodes"] if isinstance(listed, dict) else listed
    node1 = next(n for n in nodes if n["name"] == "node1")
    on("control", f"/opt/meshctl/bin/meshctl nodes expire {node1['id']} {admin}")

    def named() -> bool:
        _rc, rep = verify("--limit", "node1", "--no-matrix")
        return any(h == "node1" and c == "key expiry" and "expired" in m for h, c, m in failures(rep))

    wait_until(named, 60, "verify to report node1's expired key")
