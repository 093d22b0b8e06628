"""DERP mesh-key rotation: the overlap plan never cuts a mesh link; the executor changes nothing on old servers."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshctl.keys import write_secret_file
from meshctl.rotate.errors import RotateError
from meshctl.rotate.meshkey import parse_key_list, plan_states, render_key_list, rotate_mesh_key, unsafe_moments
from meshctl.rotate.sshexec import CommandResult, SshTarget

OLD, NEW = "a" * 64, "b" * 64


@pytest.mark.parametrize("n", [2, 3, 5])
def test_overlap_plan_is_safe_at_every_step(n: int) -> None:
    servers = [f"derp{i}" for i in range(n)]
    states = plan_states(servers, OLD, NEW)
    assert len(states) == 1 + 3 * n
    assert unsafe_moments(states) == []
    assert all(keys == [NEW] for keys in states[-1].values())


def test_direct_swap_is_caught_as_unsafe() -> None:
    states = [{"d1": [OLD], "d2": [OLD]}, {"d1": [NEW], "d2": [OLD]}, {"d1": [NEW], "d2": [NEW]}]
    assert (1, "d1", "d2") in unsafe_moments(states)
    # skipping the accept phase is unsafe too: the first server to dial NEW is refused by the others
    assert unsafe_moments(plan_states(["d1", "d2"], OLD, NEW, phases=("dial", "retire")))


def test_key_list_format() -> None:
    assert render_key_list([NEW, OLD, NEW]) == f"{NEW}\n{OLD}\n"
    assert parse_key_list(f"\n{OLD.upper()}\n{NEW}\n") == [OLD, NEW]
    with pytest.raises(RotateError, match="64 hex"):
        parse_key_list("abc\n")
    with pytest.raises(RotateError):
        render_key_list([])


class FakeDerps:
    def __init__(self, capable: bool = True) -> None:
        self.capable = capable
        self.files: dict[str, list[str]] = {}
        self.log: list[str] = []

    def run(self, target: SshTarget, key: Path, command: str, *, timeout: float = 60.0,
            input: str | None = None) -> CommandResult:
        if "parse_mesh_key_file" in command:
            return CommandResult(0 if self.capable else 1, "", "" if self.capable else "ImportError: cannot import")
        assert input is not None and input not in command  # the secret travels on stdin only
        self.files[target.name] = input.split()
        self.log.append(f"{target.name}:{input.split()[0][:1]}{len(input.split())}")
        return CommandResult(0, "active\n", "")


def _ws(tmp: Path) -> Path:
    f = tmp / "derp-mesh-900.key"
    write_secret_file(f, (OLD + "\n").encode())
    return f


def test_rotation_walks_the_phases_and_switches_the_workspace(tmp_path: Path) -> None:
    derps, ws = FakeDerps(), _ws(tmp_path)
    targets = [SshTarget("d1", "x"), SshTarget("d2", "x")]
    rotate_mesh_key(targets, Path("k"), ws, 900, runner=derps, overlap=0, new_key=NEW)
    assert derps.log == ["d1:a2", "d2:a2", "d1:b2", "d2:b2", "d1:b1", "d2:b1"]
    assert derps.files == {"d1": [NEW], "d2": [NEW]}
    assert ws.read_text().strip() == NEW


def test_servers_without_key_lists_are_left_alone(tmp_path: Path) -> None:
    derps, ws = FakeDerps(capable=False), _ws(tmp_path)
    with pytest.raises(RotateError, match="nothing was changed: d1, d2"):
        rotate_mesh_key([SshTarget("d1", "x"), SshTarget("d2", "x")], Path("k"), ws, 900, runner=derps, overlap=0)
    assert derps.files == {} and ws.read_text().strip() == OLD


def test_single_server_region_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RotateError, match="two or more"):
        rotate_mesh_key([SshTarget("d1", "x")], Path("k"), _ws(tmp_path), 900, runner=FakeDerps())
