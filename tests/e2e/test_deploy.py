"""e2e: `meshctl deploy` onto the session lab — cold deploy, no-change re-run, a setting change restarting only
what it affects, a node added with --limit, an unreachable host reported while the rest deploy.

The tests share one deployed lab and run in file order (each builds on the previous one). The first deploy
leaves node3 out, so that a later test can add it with --limit. The lab's workspace is restored before the
module ends, so later e2e modules find the mesh deployed exactly as `inventories/lab.py` describes it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshctl.deploy import build_wheelhouse
from meshctl.deploy.observe import mesh_ipv4, ping_matrix, wait_for_mesh
from meshctl.deploy.workspaces import lab_workspace
from meshctl.lab import INVENTORY_PATH, LabState

pytestmark = [pytest.mark.e2e]

MESHCTL = str(Path(sys.executable).parent / "meshctl")
LAB_INVENTORY = Path(INVENTORY_PATH)
UNITS = {"control": "meshctl-control", "derp": "meshctl-derp", "node": "meshctl-agent"}


def deploy(inventory: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run([MESHCTL, "deploy", "-i", str(inventory), "--json", *extra], capture_output=True,
                          text=True, timeout=900, env=os.environ | {"CI": "true"}, check=False)
    assert proc.stdout.strip(), f"deploy printed no JSON (exit {proc.returncode}): {proc.stderr[-3000:]}"
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def why(result: dict[str, Any], stderr: str) -> str:
    errors = {h: r["error"] for h, r in result["hosts"].items() if r["error"]}
    return f"failed hosts: {errors}; stderr tail: {stderr[-1500:]}"


def started_at(lab: LabState) -> dict[str, int]:
    """ActiveEnterTimestampMonotonic of each host's meshctl service (changes only when it (re)starts)."""
    out: dict[str, int] = {}
    for h in lab.hosts:
        unit = UNITS[h.role.value]
        proc = lab.run(h, f"systemctl show -p ActiveEnterTimestampMonotonic --value {unit}", timeout=20)
        out[h.name] = int(proc.stdout.strip() or 0)
    return out


def changed_ops(result: dict[str, Any]) -> dict[str, list[str]]:
    return {h: [o["name"] for o in r["ops"] if o["changed"]] for h, r in result["hosts"].items() if r["changed"]}


def full_mesh(lab: LabState, nodes: list[str]) -> dict[str, str]:
    statuses = wait_for_mesh(lab, nodes, timeout=120)
    addresses = {n: ip for n in nodes if n in statuses and (ip := mesh_ipv4(statuses[n]))}
    assert set(addresses) == set(nodes), f"nodes without a mesh address: {set(nodes) - set(addresses)}"
    return addresses


@pytest.fixture(scope="module")
def inventories(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("inventories")
    without = d / "lab_without_node3.py"
    without.write_text(f"import runpy as _r\n_ns = _r.run_path({str(LAB_INVENTORY)!r})\n"
                       "control, derp = _ns['control'], _ns['derp']\n"
                       "nodes = ([h for h in _ns['nodes'][0] if h[0] != 'node3'], _ns['nodes'][1])\n")
    ghost_address = f"{lab.prefix}.250"  # inside the lab's network, nothing answers there
    with_ghost = d / "lab_with_ghost.py"
    with_ghost.write_text(f"import runpy as _r\n_ns = _r.run_path({str(LAB_INVENTORY)!r})\n"
                          "control, derp = _ns['control'], _ns['derp']\n"
                          f"_ghost = ('ghost', {{**_ns['nodes'][0][0][1], 'ssh_hostname': {ghost_address!r}, "
                          f"'public_address': {ghost_address!r}}})\n"
                          "nodes = (_ns['nodes'][0] + [_ghost], _ns['nodes'][1])\n")
    return {"without_node3": without, "with_ghost": with_ghost, "lab": LAB_INVENTORY}


@pytest.fixture(scope="module")
def pinned_wheelhouse() -> Iterator[Path]:
    """One wheelhouse for the whole module: a checkout edited meanwhile must not turn a re-run into an upgrade."""
    wheelhouse = build_wheelhouse()
    previous = os.environ.get("MESHCTL_WHEELHOUSE")
    os.environ["MESHCTL_WHEELHOUSE"] = str(wheelhouse.tar)
    try:
        yield wheelhouse.tar
    finally:
        if previous is None:
            os.environ.pop("MESHCTL_WHEELHOUSE", None)
        else:
            os.environ["MESHCTL_WHEELHOUSE"] = previous


@pytest.fixture(scope="module")
def cold(lab: LabState, inventories: dict[str, Path], pinned_wheelhouse: Path) -> Iterator[dict[str, Any]]:
    control = lab.by_role("control")[0]
    ws = lab_workspace(lab.name, control.public_address)
    original = (ws.root / "mesh.toml").read_text()
    rc, result, stderr = deploy(inventories["without_node3"])
    try:
        yield {"rc": rc, "result": result, "stderr": stderr, "workspace": ws.root, "original": original}
    finally:
        (ws.root / "mesh.toml").write_text(original)


def test_cold_deploy_builds_a_mesh(lab: LabState, cold: dict[str, Any]) -> None:
    result = cold["result"]
    assert cold["rc"] == 0, why(result, cold["stderr"])
    assert result["failed"] == []
    assert set(result["hosts"]) == {"control", "derp1", "node1", "node2"}
    assert result["changed"] > 0
    assert re.fullmatch(r"ctrlkey:[0-9a-f]{64}", result["control_key"])
    assert result["hosts"]["node1"]["roles"] == ["common", "node", "ssh"]
    assert result["hosts"]["control"]["roles"] == ["common", "control", "ssh"]
    addresses = full_mesh(lab, ["node1", "node2"])
    bad = [(r.src, r.dst) for r in ping_matrix(lab, addresses) if not r.ok]
    assert bad == []
    # the one-off auth key was consumed: the agent registered and deleted it
    for node in ("node1", "node2"):
        assert lab.run(node, "test -s /var/lib/meshctl/agent/node.key && test ! -e /etc/meshctl/authkey").returncode == 0
        assert lab.run(node, "stat -c %a /var/lib/meshctl/agent").stdout.strip() == "700"
    assert lab.run("derp1", "stat -c %a /etc/meshctl/derp-token").stdout.strip() == "600"


def test_rerun_changes_nothing_and_restarts_nothing(lab: LabState, cold: dict[str, Any],
                                                     inventories: dict[str, Path]) -> None:
    before = started_at(lab)
    rc, plan, stderr = deploy(inventories["without_node3"], "--dry-run")
    assert rc == 0, why(plan, stderr)
    assert plan["dry_run"] and plan["changed"] == 0, changed_ops(plan)
    rc, result, stderr = deploy(inventories["without_node3"])
    assert rc == 0, why(result, stderr)
    assert result["changed"] == 0, changed_ops(result)
    assert started_at(lab) == before


def test_region_name_change_restarts_only_control(lab: LabState, cold: dict[str, Any],
                                                  inventories: dict[str, Path]) -> None:
    mesh_toml = cold["workspace"] / "mesh.toml"
    assert 'name = "Home"' in cold["original"]
    mesh_toml.write_text(cold["original"].replace('name = "Home"', 'name = "Home lab (renamed)"'))
    before = started_at(lab)
    rc, plan, stderr = deploy(inventories["without_node3"], "--dry-run")
    assert rc == 0, why(plan, stderr)
    assert changed_ops(plan) == {"control": ["config control.toml", "restart meshctl-control.service"]}
    assert started_at(lab) == before  # a dry run changes nothing
    assert "Home lab (renamed)" not in lab.run("control", "cat /etc/meshctl/control.toml").stdout
    rc, result, stderr = deploy(inventories["without_node3"])
    assert rc == 0, why(result, stderr)
    assert changed_ops(result) == {"control": ["config control.toml", "restart meshctl-control.service"]}
    after = started_at(lab)
    assert after["control"] != before["control"]
    assert {h: t for h, t in after.items() if h != "control"} == {h: t for h, t in before.items() if h != "control"}
    assert "Home lab (renamed)" in lab.run("control", "cat /etc/meshctl/control.toml").stdout
    mesh_toml.write_text(cold["original"])
    rc, result, stderr = deploy(inventories["without_node3"], "--limit", "control")
    assert rc == 0, why(result, stderr)
    assert set(result["hosts"]) == {"control"}


def test_added_node_joins_with_limit(lab: LabState, cold: dict[str, Any], inventories: dict[str, Path]) -> None:
    before = started_at(lab)
    rc, result, stderr = deploy(inventories["lab"], "--limit", "node3")
    assert rc == 0, why(result, stderr)
    assert set(result["hosts"]) == {"node3"}
    assert "one-off auth key" in [o["name"] for o in result["hosts"]["node3"]["ops"]]
    addresses = full_mesh(lab, ["node1", "node2", "node3"])
    bad = [(r.src, r.dst) for r in ping_matrix(lab, addresses) if not r.ok]
    assert bad == []
    after = started_at(lab)
    assert {h: t for h, t in after.items() if h != "node3"} == {h: t for h, t in before.items() if h != "node3"}


def test_unreachable_host_is_reported_and_the_rest_deploy(lab: LabState, cold: dict[str, Any],
                                                          inventories: dict[str, Path]) -> None:
    rc, result, _ = deploy(inventories["with_ghost"])
    assert rc == 1
    assert result["failed"] == ["ghost"]
    assert result["hosts"]["ghost"]["error"].startswith("common: unreachable")
    for name in ("control", "derp1", "node1", "node2", "node3"):
        assert result["hosts"][name]["error"] is None
        assert "ssh" in result["hosts"][name]["roles"]  # every phase ran on the reachable hosts
    assert result["changed"] == 0, changed_ops(result)
