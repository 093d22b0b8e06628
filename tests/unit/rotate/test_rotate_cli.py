"""CLI wiring: the rotate/ssh groups, `agent rotate` on the agent group, one-line errors."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from meshctl.cli.app import app

runner = CliRunner()


def test_rotate_group_commands() -> None:
    r = runner.invoke(app, ["rotate", "--help"])
    assert r.exit_code == 0
    for cmd in ("deploy-key", "node-keys", "node-key", "host-cert", "derp-mesh-key", "due"):
        assert cmd in r.output


def test_agent_rotate_is_registered_for_the_timer() -> None:
    r = runner.invoke(app, ["agent", "rotate", "--help"])
    assert r.exit_code == 0 and "--if-due" in r.output


def test_missing_inventory_is_one_line(tmp_path: Path) -> None:
    r = runner.invoke(app, ["rotate", "deploy-key", "-i", str(tmp_path / "nope.py")])
    assert r.exit_code == 1
    assert r.output.strip().startswith("error:") and "Traceback" not in r.output


def test_bad_policy_file_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('control_url = "http://127.0.0.1:9"\ncontrol_key = "ctrlkey:' + "00" * 32 + '"\n')
    policy = tmp_path / "rotation.toml"
    policy.write_text("[rotation]\nnode_key_max_age = 'soon'\n")
    r = runner.invoke(app, ["agent", "rotate", "--if-due", "--config", str(cfg), "--policy", str(policy)])
    assert r.exit_code == 1 and "node_key_max_age" in r.output and "Traceback" not in r.output


def test_sign_user_refuses_a_private_key(tmp_path: Path) -> None:
    key = tmp_path / "id"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n-----END OPENSSH PRIVATE KEY-----\n")
    r = runner.invoke(app, ["ssh", "sign-user", "--user", "a", "--principal", "root", str(key)],
                      env={"MESHCTL_CONTROL_URL": "http://127.0.0.1:9", "MESHCTL_API_KEY": "x"})
    assert r.exit_code == 1 and "not an SSH public key line" in r.output
