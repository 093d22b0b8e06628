"""Integration: the wheelhouse really built with pip, and the runner against hosts that refuse connections.

No lab needed: connection attempts go to closed ports on 127.0.0.1 only.
"""

from __future__ import annotations

import shutil
import socket
import tarfile
import zipfile
from pathlib import Path

import pytest

from meshctl.deploy import DeployOptions, Wheelhouse, build_wheelhouse, known_data_keys, load_inventory, run_deploy
from meshctl.deploy.wheelhouse import checkout_root, source_key
from meshctl.workspace import create_workspace

pytestmark = [pytest.mark.integration]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_wheelhouse_holds_meshctl_with_roles_and_its_dependencies(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MESHCTL_WHEELHOUSE", raising=False)
    checkout = checkout_root()
    assert checkout is not None, "run from a checkout"
    # a frozen copy of the sources: the key must not move while the test runs
    root = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("toolkit", "roles", "inventories"):
        shutil.copytree(checkout / part, root / part, ignore=ignore)
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(checkout / part, root / part)
    wh = build_wheelhouse(cache_dir=tmp_path / "cache", root=root)
    assert wh.built and wh.key == source_key(root) and wh.tar == tmp_path / "cache" / f"{wh.key}.tar"
    with tarfile.open(wh.tar) as tar:
        names = tar.getnames()
        meshctl_wheel = next(n for n in names if n.startswith("meshctl-"))
        for dep in ("pyinfra-", "typer-", "jinja2-", "pynacl-", "httpx-"):
            assert any(n.lower().startswith(dep) for n in names), (dep, names)
        extracted = tar.extractfile(meshctl_wheel)
        assert extracted is not None
        (tmp_path / meshctl_wheel).write_bytes(extracted.read())
    with zipfile.ZipFile(tmp_path / meshctl_wheel) as whl:
        content = set(whl.namelist())
    # the roles ship inside the package (hosts never need the checkout)
    for role in ("common", "control", "derp", "node", "ssh"):
        assert f"meshctl/_data/roles/{role}/deploy.py" in content
    assert "meshctl/_data/roles/control/templates/control.toml.j2" in content
    assert "meshctl/_data/inventories/example.py" in content
    again = build_wheelhouse(cache_dir=tmp_path / "cache", root=root)
    assert not again.built and again.tar == wh.tar  # cached per key
    (root / "roles" / "node" / "defaults.py").write_text((root / "roles" / "node" / "defaults.py").read_text() + "\n")
    assert source_key(root) != wh.key  # any source change is a new key (hosts reinstall, services restart)
    monkeypatch.setenv("MESHCTL_WHEELHOUSE", str(wh.tar))
    pinned = build_wheelhouse(cache_dir=tmp_path / "elsewhere")
    assert pinned.tar == wh.tar and pinned.key == wh.key


def test_unreachable_hosts_are_reported_not_raised(tmp_path: Path) -> None:
    port = closed_port()
    inv = tmp_path / "fleet.py"
    inv.write_text(
        f"control = [('ctl', {{'ssh_hostname': '127.0.0.1', 'ssh_port': {port}, 'ssh_connect_retries': 0}})]\n"
        f"nodes = [('n1', {{'ssh_hostname': '127.0.0.1', 'ssh_port': {port}, 'ssh_connect_retries': 0}})]\n")
    spec = load_inventory(inv, allowed_keys=known_data_keys())
    ws = create_workspace(tmp_path / "ws", control_url="http://127.0.0.1:8080")
    tar = tmp_path / "0.0.0-test.tar"
    tarfile.open(tar, "w").close()
    result = run_deploy(spec, ws, Wheelhouse(key="0.0.0-test", tar=tar, built=False), DeployOptions(connect_timeout=3))
    assert result.failed == ["ctl", "n1"]
    for host in ("ctl", "n1"):
        error = result.hosts[host].error
        assert error is not None and error.startswith("common: unreachable:"), error
    data = result.to_json()
    assert data["changed"] == 0 and data["control_key"] is None
    assert not result.ok
