"""The mesh plan and the configs the roles render from it, parsed back by the daemons' own config loaders."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from meshctl.agent.config import parse_config as parse_agent_config
from meshctl.control.config import load_config as load_control_config
from meshctl.deploy import DeployError, known_data_keys, load_inventory, role_defaults
from meshctl.deploy.mesh import format_duration, plan_mesh
from meshctl.deploy.roles import ROLE_ORDER, load_role
from meshctl.keys import ControlPrivateKey
from meshctl.workspace import Workspace, create_workspace

INVENTORY = """
control = [("ctl", {"ssh_hostname": "10.0.0.2", "public_address": "10.0.0.2"})]
derp = ([("derp1", {"ssh_hostname": "10.0.0.3"}), ("derp2", {"ssh_hostname": "10.0.0.4"}),
         ("derp9", {"ssh_hostname": "10.0.0.9", "derp_region": 901, "derp_port": 443,
                    "derp_tls_cert": "/etc/ssl/d.pem", "derp_tls_key": "/etc/ssl/d.key"})], {"derp_region": 900})
nodes = [("n1", {"ssh_hostname": "10.0.0.5", "wg_port": 41000}), ("n2", {"ssh_hostname": "derp.example"})]
"""


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    ws = create_workspace(tmp_path / "ws", control_url="http://10.0.0.2:8080/", domain="corp.mesh")
    text = (ws.root / "mesh.toml").read_text()
    text += '\n[[derp.regions]]\nid = 901\ncode = "nyc"\nname = "New York"\n'
    (ws.root / "mesh.toml").write_text(text)
    return Workspace.load(ws.root)


@pytest.fixture
def inventory(tmp_path: Path) -> Any:
    path = tmp_path / "inv.py"
    path.write_text(INVENTORY)
    return load_inventory(path, allowed_keys=known_data_keys(), resolve=lambda n: False)


def _role(name: str) -> Any:
    load_role(name)
    return sys.modules[f"meshctl_roles.{name}.deploy"]


def _data(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for role in ROLE_ORDER:
        data.update(role_defaults(role))
    data.update(extra)
    return data


def test_plan_groups_derp_servers_by_region(workspace: Workspace, inventory: Any) -> None:
    plan = plan_mesh(workspace, inventory, role_defaults("derp"))
    assert plan.control_url == "http://10.0.0.2:8080"
    assert [(r.id, [s.name for s in r.servers]) for r in plan.regions] == [(900, ["derp1", "derp2"]), (901, ["derp9"])]
    assert plan.region(900).meshed and not plan.region(901).meshed
    assert plan.mesh_peers("derp1") == ("http://10.0.0.4:8443",)
    assert plan.mesh_peers("derp9") == ()
    assert plan.derp_server("derp9").url == "https://10.0.0.9:443"
    assert plan.node_key_expiry == "180d"


def test_plan_refuses_a_region_missing_from_the_workspace(workspace: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "inv2.py"
    path.write_text(INVENTORY.replace("901", "950"))
    spec = load_inventory(path, allowed_keys=known_data_keys(), resolve=lambda n: False)
    with pytest.raises(DeployError, match="DERP host 'derp9': region 950 is not in the workspace"):
        plan_mesh(workspace, spec, role_defaults("derp"))


def test_control_url_from_the_control_host_overrides_the_workspace(workspace: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "inv3.py"
    path.write_text(INVENTORY.replace('"public_address": "10.0.0.2"', '"control_url": "https://ctl.corp:443"'))
    spec = load_inventory(path, allowed_keys=known_data_keys(), resolve=lambda n: False)
    assert plan_mesh(workspace, spec, role_defaults("derp")).control_url == "https://ctl.corp:443"


def test_control_config_is_what_the_control_server_reads(workspace: Workspace, inventory: Any,
                                                        tmp_path: Path) -> None:
    plan = plan_mesh(workspace, inventory, role_defaults("derp"))
    text = _role("control").render_config(plan, _data())
    path = tmp_path / "control.toml"
    path.write_text(text)
    config = load_control_config(path)
    assert config.domain == "corp.mesh"
    assert config.listen == "0.0.0.0:8080"
    assert str(config.state_dir) == "/var/lib/meshctl/control"
    assert config.node_key_expiry == 180 * 86400
    regions = config.derp_map.regions
    assert sorted(regions) == [900, 901]
    assert regions[901].region_name == "New York"
    nodes = {n.name: n for r in regions.values() for n in r.nodes}
    assert nodes["derp1"].ipv4 == "10.0.0.3" and nodes["derp1"].plain_http and nodes["derp1"].derp_port == 8443
    assert nodes["derp9"].derp_port == 443 and not nodes["derp9"].plain_http


def test_derp_config(workspace: Workspace, inventory: Any) -> None:
    plan = plan_mesh(workspace, inventory, role_defaults("derp"))
    derp = _role("derp")
    meshed = tomllib.loads(derp.render_config(plan, "derp1", _data()))
    assert meshed["listen"] == "0.0.0.0:8443" and meshed["stun_listen"] == "0.0.0.0:3478"
    assert meshed["region_id"] == 900
    assert meshed["verify_url"] == "http://10.0.0.2:8080/derp/verify"
    assert meshed["verify_token_file"] == "/etc/meshctl/derp-token"
    assert meshed["mesh_with"] == ["http://10.0.0.4:8443"]
    assert meshed["mesh_key_file"] == "/etc/meshctl/derp-mesh.key"
    alone = tomllib.loads(derp.render_config(plan, "derp9", _data(derp_tls_cert="/c", derp_tls_key="/k")))
    assert "mesh_with" not in alone and "mesh_key_file" not in alone
    assert alone["tls_cert"] == "/c"


def test_derp_config_is_what_the_relay_reads(workspace: Workspace, inventory: Any, tmp_path: Path) -> None:
    from meshctl.derp.config import load_config as load_derp_config

    plan = plan_mesh(workspace, inventory, role_defaults("derp"))
    derp = _role("derp")
    for name, meshed in (("derp1", True), ("derp9", False)):
        path = tmp_path / f"{name}.toml"
        path.write_text(derp.render_config(plan, name, _data()))
        config = load_derp_config(path)
        assert config.region_id == plan.derp_server(name).region_id
        assert config.tls_cert is None  # plain HTTP: no TLS keys written at all
        assert str(config.verify_token_file) == "/etc/meshctl/derp-token"
        assert (config.mesh_key_file is not None) == meshed
        assert config.mesh_with == (("http://10.0.0.4:8443",) if meshed else ())


def test_agent_config_is_what_the_agent_reads(workspace: Workspace, inventory: Any) -> None:
    plan = plan_mesh(workspace, inventory, role_defaults("derp"))
    key = ControlPrivateKey.generate().public_key()
    text = _role("node").render_config(plan, key.to_text(), _data(wg_port=41000))
    config = parse_agent_config(tomllib.loads(text))
    assert config.control_key == key
    assert config.control_url == "http://10.0.0.2:8080"
    assert config.port == 41000
    assert str(config.auth_key_file) == "/etc/meshctl/authkey"
    assert str(config.state_dir) == "/var/lib/meshctl/agent"


@pytest.mark.parametrize(("role", "execstart"), [
    ("control", "ExecStart=/opt/meshctl/bin/meshctl control serve --config /etc/meshctl/control.toml"),
    ("derp", "ExecStart=/opt/meshctl/bin/meshctl derp serve --config /etc/meshctl/derp.toml"),
    ("node", "ExecStart=/opt/meshctl/bin/meshctl agent run --config /etc/meshctl/agent.toml"),
])
def test_units_are_hardened(role: str, execstart: str) -> None:
    unit = _role(role).render_unit(_data())
    lines = unit.splitlines()
    assert execstart in lines
    for directive in ("NoNewPrivileges=", "ProtectSystem=strict", "ProtectHome=", "PrivateTmp=",
                      "RestrictAddressFamilies=", "CapabilityBoundingSet=", "WantedBy=multi-user.target"):
        assert any(line.startswith(directive) for line in lines), (role, directive)


def test_a_missing_template_variable_fails_loudly(tmp_path: Path) -> None:
    import jinja2

    from meshctl.deploy.templates import render

    (tmp_path / "t.j2").write_text("x = {{ value | toml }}\n")
    assert render(tmp_path, "t.j2", value="a\"b") == 'x = "a\\"b"\n'
    with pytest.raises(jinja2.UndefinedError):
        render(tmp_path, "t.j2")


def test_common_role_packages_and_install_script() -> None:
    common = _role("common")
    assert common.wanted_packages(kernel_wireguard=True) == ["wireguard-tools", "python3-venv"]
    assert "wireguard-go" in common.wanted_packages(kernel_wireguard=False)
    script = common.install_script("/opt/meshctl", "/var/cache/meshctl/w.tar", "0.1.0-abc")
    assert "--no-index" in script and "--find-links" in script
    assert script.index("pip install") < script.index("echo 0.1.0-abc > /opt/meshctl/.meshctl-install")


def test_format_duration() -> None:
    assert [format_duration(s) for s in (86400 * 180, 7200, 90, 60)] == ["180d", "2h", "90s", "1m"]
