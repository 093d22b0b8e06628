"""Agent config: defaults, every field checked, one clear error line for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshctl.agent.config import load_config, parse_config
from meshctl.agent.errors import AgentConfigError
from meshctl.keys import ControlPrivateKey

KEY = ControlPrivateKey.generate().public_key().to_text()


def test_minimal_config_gets_documented_defaults() -> None:
    cfg = parse_config({"control_url": "http://10.0.0.1:8080/", "control_key": KEY})
    assert cfg.control_url == "http://10.0.0.1:8080"
    assert cfg.control_key.to_text() == KEY
    assert (cfg.interface, cfg.port, cfg.disco_port, cfg.backend) == ("mesh0", 41641, 41642, "auto")
    assert cfg.state_dir == Path("/var/lib/meshctl/agent")
    assert cfg.machine_key_path == Path("/var/lib/meshctl/agent/machine.key")
    assert cfg.node_key_path == Path("/var/lib/meshctl/agent/node.key")
    assert cfg.auth_key_file == Path("/etc/meshctl/authkey")
    assert cfg.socket == Path("/run/meshctl/agent.sock")
    assert cfg.derp_home is None and cfg.magic_dns and cfg.packet_filter


def test_full_config_file(tmp_path: Path) -> None:
    f = tmp_path / "agent.toml"
    f.write_text(f'control_url = "https://c.example"\ncontrol_key = "{KEY}"\nstate_dir = "/s"\n'
                 'interface = "m1"\nport = 5000\nbackend = "userspace"\nderp_home = 901\nmagic_dns = false\n')
    cfg = load_config(f)
    assert (cfg.interface, cfg.port, cfg.disco_port, cfg.backend, cfg.derp_home) == ("m1", 5000, 5001, "userspace", 901)
    assert cfg.state_dir == Path("/s") and not cfg.magic_dns


@pytest.mark.parametrize(("data", "message"), [
    ({"control_key": KEY}, "control_url must be an http:// or https:// URL, got None"),
    ({"control_url": "ftp://x", "control_key": KEY}, "control_url must be an http:// or https:// URL, got 'ftp://x'"),
    ({"control_url": "http://x"}, "control_key is required"),
    ({"control_url": "http://x", "control_key": "mkey:" + "00" * 32}, "control_key: control public key: expected 'ctrlkey:' prefix, got 'mkey:'"),
    ({"control_url": "http://x", "control_key": KEY, "port": "41641"}, "port must be a int, got str '41641'"),
    ({"control_url": "http://x", "control_key": KEY, "port": 65535}, "port must be 1-65534 (disco uses port + 1), got 65535"),
    ({"control_url": "http://x", "control_key": KEY, "backend": "magic"}, "backend must be auto, kernel or userspace, got 'magic'"),
    ({"control_url": "http://x", "control_key": KEY, "interface": "a" * 16}, "interface must be a Linux interface name"),
    ({"control_url": "http://x", "control_key": KEY, "magic_dns": 1}, "magic_dns must be a bool, got int 1"),
    ({"control_url": "http://x", "control_key": KEY, "colour": "blue"}, "unknown setting 'colour'"),
])
def test_bad_settings_name_what_was_found(data: dict[str, object], message: str) -> None:
    with pytest.raises(AgentConfigError) as err:
        parse_config(data, "/etc/meshctl/agent.toml")
    assert str(err.value).startswith("/etc/meshctl/agent.toml: " + message)


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(AgentConfigError, match="config file not found") as err:
        load_config(tmp_path / "nope.toml")
    assert err.value.hint and "--config" in err.value.hint
    bad = tmp_path / "bad.toml"
    bad.write_text("control_url = \n")
    with pytest.raises(AgentConfigError, match="not valid TOML"):
        load_config(bad)
