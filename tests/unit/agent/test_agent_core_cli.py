"""`meshctl agent run`: a bad or missing config is one error line and exit 1, before anything is touched."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from meshctl.cli.app import app


def test_missing_config_is_one_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["agent", "run", "--config", str(tmp_path / "agent.toml")])
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert lines == [f"error: {tmp_path / 'agent.toml'}: config file not found "
                     "(pass --config FILE or create /etc/meshctl/agent.toml)"]


def test_wrong_control_key_kind_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('control_url = "http://127.0.0.1:9"\ncontrol_key = "nodekey:' + "00" * 32 + '"\n'
                   f'state_dir = "{tmp_path}/state"\n')
    res = CliRunner().invoke(app, ["agent", "run", "--config", str(cfg)])
    assert res.exit_code == 1
    assert res.output.strip() == (f"error: {cfg}: control_key: control public key: expected 'ctrlkey:' prefix, "
                                  "got 'nodekey:'")
    assert not (tmp_path / "state").exists()  # nothing was created
