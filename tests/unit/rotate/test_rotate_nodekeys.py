"""Fleet node-key rotation orchestration against a scripted fleet (the SSH runner seam)."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshctl.rotate.errors import HostStepError, RotateError
from meshctl.rotate.nodekeys import batches, rotate_node_keys
from meshctl.rotate.sshexec import CommandResult, SshTarget


class FakeFleet:
    """Nodes with a WireGuard key each; a peer learns a new key `lag` polls after the rotation."""

    def __init__(self, names: list[str], lag: int = 2, broken: str | None = None) -> None:
        self.keys = {n: f"{n}-key0" for n in names}
        self.seen = {n: {m: self.keys[m] for m in names if m != n} for n in names}
        self.pending: list[tuple[int, str]] = []
        self.lag = lag
        self.broken = broken
        self.log: list[tuple[str, str]] = []

    def run(self, target: SshTarget, key: Path, command: str, *, timeout: float = 60.0) -> CommandResult:
        host = target.name
        self.log.append((host, command.split()[0] if not command.startswith("/") else "meshctl"))
        if command.startswith("wg show mesh0 public-key"):
            return CommandResult(0, self.keys[host] + "\n", "")
        if command.startswith("wg show mesh0 peers"):
            self.pending = [(n - 1, h) for n, h in self.pending]
            for n, h in self.pending:
                if n <= 0:
                    for peer in self.seen:
                        if peer != h:
                            self.seen[peer][h] = self.keys[h]
            self.pending = [(n, h) for n, h in self.pending if n > 0]
            return CommandResult(0, "\n".join(self.seen[host].values()) + "\n", "")
        if "rotate node-key" in command:
            if host == self.broken:
                return CommandResult(1, "", "error: agent is not running")
            gen = int(self.keys[host][-1]) + 1
            self.keys[host] = f"{host}-key{gen}"
            self.pending.append((self.lag, host))
            return CommandResult(0, "{}", "")
        raise AssertionError(f"unexpected command {command!r}")


def _targets(names: list[str]) -> list[SshTarget]:
    return [SshTarget(n, "127.0.0.1") for n in names]


def test_batches() -> None:
    assert batches(["a", "b", "c"], 2) == [["a", "b"], ["c"]]
    with pytest.raises(RotateError):
        batches(["a"], 0)


def test_each_batch_is_confirmed_by_a_peer_before_the_next() -> None:
    fleet = FakeFleet(["n1", "n2", "n3"])
    result = rotate_node_keys(_targets(["n1", "n2", "n3"]), Path("k"), runner=fleet, batch_size=2,
                              confirm_timeout=5)
    assert [b.hosts for b in result.batches] == [("n1", "n2"), ("n3",)]
    assert result.batches[0].observer == "n3" and result.batches[1].observer == "n1"
    assert fleet.keys == {"n1": "n1-key1", "n2": "n2-key1", "n3": "n3-key1"}
    assert result.batches[0].new_keys == {"n1": "n1-key1", "n2": "n2-key1"}
    # n3 was rotated only after n3 itself had confirmed the first batch
    first_rotate_n3 = fleet.log.index(("n3", "meshctl"))
    assert ("n3", "wg") in fleet.log[:first_rotate_n3]


def test_failure_stops_before_later_batches() -> None:
    fleet = FakeFleet(["n1", "n2", "n3"], broken="n2")
    with pytest.raises(HostStepError, match="n2: rotate node key failed: error: agent is not running"):
        rotate_node_keys(_targets(["n1", "n2", "n3"]), Path("k"), runner=fleet, batch_size=1, confirm_timeout=5)
    assert fleet.keys["n3"] == "n3-key0"


def test_peer_that_never_learns_the_key_fails_the_batch() -> None:
    fleet = FakeFleet(["n1", "n2"], lag=10**9)
    with pytest.raises(HostStepError, match="lack the new key of"):
        rotate_node_keys(_targets(["n1"]), Path("k"), runner=fleet, observers=_targets(["n2"]), confirm_timeout=1)
