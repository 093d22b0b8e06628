"""`meshctl lab` front end: bad input and a missing lab are one error line and exit 1, touching nothing."""

from __future__ import annotations

from typer.testing import CliRunner

from meshctl.cli.app import app

runner = CliRunner()


def _one_error_line(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_bad_nat_option_is_refused_before_anything_is_created() -> None:
    line = _one_error_line(["lab", "up", "--name", "unitx", "--nat", "node2"])
    assert line == "error: --nat 'node2': wanted NODE=easy or NODE=hard"


def test_bad_lab_name_is_refused() -> None:
    line = _one_error_line(["lab", "down", "--name", "My-Lab"])
    assert line.startswith("error: lab name 'My-Lab' is not 1-12 lowercase letters/digits")


def test_status_and_ssh_of_a_lab_that_is_not_up_say_how_to_start_it() -> None:
    for args in (["lab", "status", "--name", "unitnone"], ["lab", "ssh", "node1", "--name", "unitnone", "--", "true"]):
        line = _one_error_line(args)
        assert line == ("error: lab 'unitnone' is not running (no /var/lib/meshctl/lab/unitnone/state.json); "
                        "start it with: meshctl lab up --name unitnone")
