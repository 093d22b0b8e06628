"""Which workspace a deploy uses: explicit, found, or the lab's own for a lab inventory."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshctl.deploy.inventory import parse_inventory
from meshctl.deploy.workspaces import resolve_workspace
from meshctl.errors import ConfigError
from meshctl.workspace import create_workspace


def test_lab_inventory_gets_the_labs_workspace_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MESHCTL_WORKSPACE", raising=False)
    monkeypatch.setenv("MESHCTL_LAB", "demo")
    lab = {"lab_role": "control", "ssh_hostname": "10.1.2.10", "public_address": "10.1.2.10"}
    spec = parse_inventory({"control": [("control", lab)], "nodes": [("node1", {**lab, "ssh_hostname": "10.1.2.101"})]},
                           "lab.py")
    ws = resolve_workspace(spec, root=tmp_path / "labs")
    assert ws.root == (tmp_path / "labs" / "demo" / "workspace").resolve()
    assert ws.control_url == "http://10.1.2.10:8080"
    (ws.root / "mesh.toml").write_text((ws.root / "mesh.toml").read_text().replace('"Home"', '"Edited"'))
    again = resolve_workspace(spec, root=tmp_path / "labs")
    assert again.derp_regions[0].name == "Edited"  # reused, never recreated


def test_other_inventory_without_workspace_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MESHCTL_WORKSPACE", raising=False)
    spec = parse_inventory({"control": ["c"], "nodes": ["n"]}, "fleet.py")
    with pytest.raises(ConfigError, match="no meshctl workspace"):
        resolve_workspace(spec, root=tmp_path / "labs")


def test_explicit_workspace_wins(tmp_path: Path) -> None:
    create_workspace(tmp_path / "ws", control_url="https://ctl.example:443")
    spec = parse_inventory({"control": [("c", {"lab_role": "control"})], "nodes": ["c"]}, "lab.py")
    assert resolve_workspace(spec, tmp_path / "ws", root=tmp_path / "labs").control_url == "https://ctl.example:443"
    with pytest.raises(ConfigError):
        resolve_workspace(spec, tmp_path / "missing", root=tmp_path / "labs")
