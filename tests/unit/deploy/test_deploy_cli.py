"""`meshctl deploy` front end: broken input is one line and exit 1 before any host is contacted; JSON shape."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from meshctl.cli.app import app
from meshctl.deploy import DeployResult, HostResult, OpResult, summary_table
from meshctl.workspace import create_workspace

runner = CliRunner()


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    create_workspace(tmp_path / "ws")
    return tmp_path / "ws"


def test_inventory_without_control_group(tmp_path: Path, ws: Path) -> None:
    inv = tmp_path / "fleet.py"
    inv.write_text("nodes = [('n1', {'ssh_hostname': '10.255.255.1'})]\n")
    r = runner.invoke(app, ["deploy", "-i", str(inv), "-w", str(ws)])
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: inventory fleet.py: no group 'control'")
    assert r.stdout == ""


def test_unknown_key_names_the_near_miss(tmp_path: Path, ws: Path) -> None:
    inv = tmp_path / "fleet.py"
    inv.write_text("control = [('c', {'ssh_hostname': '10.255.255.1', 'derp_regoin': 900})]\nnodes = ['c']\n")
    r = runner.invoke(app, ["deploy", "-i", str(inv), "-w", str(ws)])
    assert r.exit_code == 1
    assert r.stderr.strip() == ("error: inventory fleet.py: host 'c': unknown data key 'derp_regoin' "
                                "(did you mean 'derp_region'?)")


def test_limit_to_a_host_not_in_the_inventory(tmp_path: Path, ws: Path) -> None:
    inv = tmp_path / "fleet.py"
    inv.write_text("control = [('c', {'ssh_hostname': '10.255.255.1'})]\nnodes = ['c']\n")
    r = runner.invoke(app, ["deploy", "-i", str(inv), "-w", str(ws), "--limit", "c,ghost", "--dry-run"])
    assert r.exit_code == 1
    assert "--limit names hosts that are not in the inventory: ghost" in r.stderr


def test_result_json_counts_changed_operations() -> None:
    a = HostResult("a", [OpResult("common", "venv", False, True), OpResult("node", "config", True, True),
                         OpResult("node", "restart", True, True)], roles=["common", "node"])
    b = HostResult("b", [OpResult("common", "venv", False, True)], error="common: unreachable: timed out")
    result = DeployResult({"a": a, "b": b})
    data = result.to_json()
    assert data["changed"] == 2
    assert data["failed"] == ["b"]
    assert data["hosts"]["a"]["changed"] == 2
    assert data["hosts"]["a"]["ops"][1] == {"role": "node", "name": "config", "changed": True, "success": True}
    assert data["hosts"]["b"]["error"] == "common: unreachable: timed out"
    assert not result.ok
    assert DeployResult({"a": HostResult("a", [OpResult("common", "venv", False, True)])}).to_json()["changed"] == 0
    assert summary_table(result).row_count == 2


def test_rich_progress_shows_each_host_and_its_failure() -> None:
    import io

    from rich.console import Console

    from meshctl.deploy import RichProgress

    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=160)
    with RichProgress(console, enabled=True) as progress:
        progress.phase_started("common", {"a": 2, "b": 2})
        progress.op_done("a", "common", "virtualenv /opt/meshctl", False, True)
        progress.op_done("a", "common", "install meshctl 0.1.0", True, True)
        progress.host_failed("b", "common", "unreachable: timed out")
        progress.phase_finished("common")
        tasks = {t.fields["host"]: t for t in progress.progress.tasks}
    assert tasks["a"].completed == 2 and tasks["a"].description == "done"
    assert tasks["b"].description == "FAILED: unreachable: timed out"
    assert "FAILED: unreachable: timed out" in out.getvalue()
