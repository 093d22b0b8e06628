"""The agent's systemd unit: parses as INI and carries the capabilities and hardening the agent relies on."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from meshctl.agent.unit import agent_unit_text


def parsed(text: str) -> configparser.ConfigParser:
    # systemd allows repeated keys; strict=False keeps the last, which is how these are written (once each)
    parser = configparser.ConfigParser(strict=True, interpolation=None, comment_prefixes=("#",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def test_unit_parses_and_runs_the_agent_from_the_venv() -> None:
    unit = parsed(agent_unit_text())
    assert unit.sections() == ["Unit", "Service", "Install"]
    assert unit["Service"]["ExecStart"] == "/opt/meshctl/bin/meshctl agent run --config /etc/meshctl/agent.toml"
    assert unit["Service"]["Restart"] == "on-failure"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_only_the_three_network_capabilities_are_kept() -> None:
    service = parsed(agent_unit_text())["Service"]
    caps = {"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE"}
    assert set(service["CapabilityBoundingSet"].split()) == caps
    assert set(service["AmbientCapabilities"].split()) == caps


def test_tun_device_directories_and_sandbox() -> None:
    service = parsed(agent_unit_text())["Service"]
    assert service["DeviceAllow"] == "/dev/net/tun rw"
    assert service["RuntimeDirectory"].split() == ["meshctl", "wireguard"]
    assert service["RuntimeDirectoryMode"] == "0700"
    assert service["StateDirectory"] == "meshctl/agent"
    assert service["ProtectSystem"] == "strict"
    assert "-/etc/resolv.conf" in service["ReadWritePaths"].split()
    for key in ("ProtectHome", "PrivateTmp", "NoNewPrivileges"):
        assert service[key] == "true", key
    assert service["RestrictAddressFamilies"].split() == ["AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"]


def test_the_unit_says_why_it_runs_as_root() -> None:
    text = agent_unit_text()
    assert "# Runs as root" in text
    assert "wireguard-go" in text and "nft" in text


def test_paths_are_injectable_and_checked() -> None:
    unit = parsed(agent_unit_text("/usr/bin/meshctl", "/etc/other.toml"))
    assert unit["Service"]["ExecStart"] == "/usr/bin/meshctl agent run --config /etc/other.toml"
    with pytest.raises(ValueError, match="exec_path must be an absolute path"):
        agent_unit_text("meshctl")
    with pytest.raises(ValueError, match="config must be an absolute path without spaces"):
        agent_unit_text(config="/etc/my config.toml")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_finds_no_unknown_directive(tmp_path: Path) -> None:
    unit = tmp_path / "meshctl-agent.service"
    unit.write_text(agent_unit_text(exec_path="/bin/true"))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False)
    assert "Unknown key" not in done.stderr and "Unknown lvalue" not in done.stderr, done.stderr


def test_a_crashed_agents_resolv_conf_is_put_back_after_every_stop() -> None:
    service = parsed(agent_unit_text("/opt/meshctl/bin/meshctl"))["Service"]
    assert service["ExecStopPost"] == (
        "-/opt/meshctl/bin/python -m meshctl.agent.resolvconf restore --config /etc/meshctl/agent.toml")
