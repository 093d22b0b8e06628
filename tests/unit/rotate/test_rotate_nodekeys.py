"""Fleet node-key rotation orchestration against a scripted fleet (the SSH runner seam)."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshctl.rotate.errors import HostStepError, RotateError
from meshctl.rotate.nodekeys import BatchResult, attribute_losses, batches, parse_ping, rotate_node_keys
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


# captured from `ping -n -D -O -i 0.2 -c 6 127.0.0.1` while echo replies were dropped for 0.5 s
PING_OUT = """PING 127.0.0.1 (127.0.0.1) 56(84) bytes of data.
[1795542976.589220] no answer yet for icmp_seq=1
[1795542976.793682] no answer yet for icmp_seq=2
[1795542976.997025] no answer yet for icmp_seq=3
[1795542977.201352] no answer yet for icmp_seq=4
[1795542977.201432] 64 bytes from 127.0.0.1: icmp_seq=5 ttl=64 time=0.025 ms
[1795542977.405091] 64 bytes from 127.0.0.1: icmp_seq=6 ttl=64 time=0.045 ms

--- 127.0.0.1 ping statistics ---
6 packets transmitted, 2 received, 66.6667% packet loss, time 1067ms
"""


def test_parse_ping_times_each_lost_probe() -> None:
    sent, received, lost_at = parse_ping(PING_OUT)
    assert (sent, received) == (6, 2)
    assert lost_at == (1795542976.589220, 1795542976.793682, 1795542976.997025, 1795542977.201352)
    # a probe reported unanswered that is answered later is not lost
    late = PING_OUT.replace("icmp_seq=5 ttl", "icmp_seq=4 ttl")
    assert len(parse_ping(late)[2]) == 3
    with pytest.raises(ValueError):
        parse_ping("ping: connect: Network is unreachable\n")


def test_losses_are_counted_against_the_running_batch() -> None:
    mk = [BatchResult(("n1",), {}, {}, None, 1.0, 0.1, 100.0), BatchResult(("n2",), {}, {}, None, 1.0, 0.1, 105.0)]
    out = attribute_losses(mk, [99.0, 100.5, 101.0, 106.0, 200.0])
    assert [b.lost_probes for b in out] == [2, 2]


class ProbedFleet(FakeFleet):
    """FakeFleet plus a probe: the probed pair answers only after `down` failed checks per batch."""

    def __init__(self, names: list[str], down: int) -> None:
        super().__init__(names, lag=1)
        self.down = down
        self.failing = 0
        self.checks = 0

    def run(self, target: SshTarget, key: Path, command: str, *, timeout: float = 60.0) -> CommandResult:
        if command.startswith("ip -o -4 addr"):
            return CommandResult(0, "5: mesh0    inet 100.64.0.2/32 scope global mesh0\n", "")
        if command.startswith("nohup ping"):
            return CommandResult(0, "4242\n", "")
        if command.startswith("kill -INT 4242"):
            return CommandResult(0, PING_OUT, "")
        if command.startswith("ping -n -c 1"):
            self.checks += 1
            self.failing += 1
            return CommandResult(0 if self.failing > self.down else 1, "", "")
        if "rotate node-key" in command:
            self.failing = 0
        return super().run(target, key, command, timeout=timeout)


def test_probe_gates_each_batch_until_traffic_flows() -> None:
    fleet = ProbedFleet(["n1", "n2", "n3"], down=2)
    result = rotate_node_keys(_targets(["n1", "n2", "n3"]), Path("k"), runner=fleet, probe=("n1", "n2"),
                              confirm_timeout=5)
    assert result.probe is not None and (result.probe.sent, result.probe.lost) == (6, 4)
    assert all(b.recovered_seconds is not None for b in result.batches)
    assert fleet.checks == 9  # 3 batches x (2 unanswered checks + 1 answered)


def test_probe_that_never_recovers_stops_the_rotation() -> None:
    fleet = ProbedFleet(["n1", "n2", "n3"], down=10**9)
    with pytest.raises(HostStepError, match="still unreachable"):
        rotate_node_keys(_targets(["n1", "n2", "n3"]), Path("k"), runner=fleet, probe=("n1", "n2"),
                         confirm_timeout=1)
    assert fleet.keys["n2"] == "n2-key0" and fleet.keys["n3"] == "n3-key0"
