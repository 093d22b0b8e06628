"""Lab state files: round trip, the SSH argv other parts use, and the errors naming `meshctl lab up`."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from meshctl.lab.errors import LabError, LabHostError, LabNotRunningError
from meshctl.lab.plan import Nat, Role
from meshctl.lab.state import LabHost, LabState, load_state, save_state


def _state(root: Path) -> LabState:
    hosts = (
        LabHost("control", Role.CONTROL, "10.230.1.10", "10.230.1.10", "10.230.1.10", 22, Nat.NONE, 100, 5,
                "a" * 32, "mlab-t-control", None, "/x/control/root"),
        LabHost("node1", Role.NODE, "192.168.1.2", "10.230.1.201", "10.230.1.201", 22, Nat.HARD, 101, 6,
                "b" * 32, "mlab-t-node1", "mlab-t-node1-nat", "/x/node1/root"),
    )  # fmt: skip
    return LabState("t", "10.230.1", "/k/id_ed25519", "/k/known_hosts", str(root / "t" / "state.json"), hosts,
                    "/rootfs", {"boot": 1.5})  # fmt: skip


def test_state_round_trips_through_its_file(tmp_path: Path) -> None:
    state = _state(tmp_path)
    path = save_state(state, tmp_path)
    assert path == tmp_path / "t" / "state.json"
    assert load_state("t", tmp_path) == state
    data = json.loads(path.read_text())
    assert data["hosts"][1]["nat"] == "hard" and data["hosts"][1]["role"] == "node"
    assert data["network"] == "10.230.1.0/24"


def test_missing_state_says_the_lab_is_not_running_and_how_to_start_it(tmp_path: Path) -> None:
    with pytest.raises(LabNotRunningError) as info:
        load_state("nope", tmp_path)
    assert str(info.value) == (f"lab 'nope' is not running (no {tmp_path}/nope/state.json); "
                               "start it with: meshctl lab up --name nope")


def test_corrupt_state_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "state.json").write_text("{not json")
    with pytest.raises(LabError, match="unreadable"):
        load_state("t", tmp_path)


def test_ssh_command_uses_the_lab_key_and_strict_host_key_checking(tmp_path: Path) -> None:
    argv = _state(tmp_path).ssh_command("node1", ["sh", "-c", "echo 'a b'; exit 3"])
    assert argv[0] == "ssh"
    joined = " ".join(argv)
    assert "-i /k/id_ed25519" in joined
    assert "UserKnownHostsFile=/k/known_hosts" in argv
    assert "StrictHostKeyChecking=yes" in argv and "BatchMode=yes" in argv and "IdentitiesOnly=yes" in argv
    # NATed node: through its router's public address; the remote command survives the remote shell intact
    assert argv[-3:-1] == ["root@10.230.1.201", "--"]
    assert shlex.split(argv[-1]) == ["sh", "-c", "echo 'a b'; exit 3"]


def test_unknown_host_names_the_hosts_there_are(tmp_path: Path) -> None:
    with pytest.raises(LabHostError, match=r"no host 'node9' \(hosts: control, node1\)"):
        _state(tmp_path).host("node9")


def test_by_role(tmp_path: Path) -> None:
    state = _state(tmp_path)
    assert [h.name for h in state.by_role("node")] == ["node1"]
    assert [h.name for h in state.by_role(Role.CONTROL)] == ["control"]
    assert state.by_role("derp") == []
