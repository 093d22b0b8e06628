"""Fleet node-key rotation: one batch at a time, each node's agent rotates through its local API.

For each batch, on every node of the batch (over SSH with the deploy key):

    wg show <if> public-key                  the current WireGuard key (= node key)
    meshctl rotate node-key --json           the agent registers a new key with proof of the old one
    wg show <if> public-key                  must now differ

then, on an observer (a node outside the batch), `wg show <if> peers` is polled until it lists every new
key and none of the old ones: control has pushed the change and the peer has applied it. The next batch
starts only when this batch is confirmed; a failure stops the rotation with the batch's hosts named.

With a probe (`ping -D -O` every 0.2 s between two nodes over their mesh addresses, started before the
first batch and stopped after the last), the next batch also waits until the probed pair talks again, and
each batch reports the probes lost between its start and the next batch's start.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import HostStepError, RotateError
from .sshexec import Runner, SshTarget

__all__ = ["BatchResult", "NodeKeyRotation", "ProbeResult", "attribute_losses", "batches", "parse_ping",
           "rotate_node_keys"]

Progress = Callable[[str, str, str], None]
_PING_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")
_REPLY = re.compile(r"bytes from .*?icmp_seq=(\d+)")
_NO_ANSWER = re.compile(r"\[(\d+\.\d+)\] no answer yet for icmp_seq=(\d+)")


@dataclass(frozen=True)
class BatchResult:
    hosts: tuple[str, ...]
    old_keys: dict[str, str]
    new_keys: dict[str, str]
    observer: str | None
    seconds: float
    confirm_seconds: float
    started_at: float = 0.0  # wall clock (the probe's timestamps are compared with it)
    lost_probes: int = 0  # probes lost from this batch's start to the next batch's start
    recovered_seconds: float | None = None  # with a probe: until the probed pair talked again


@dataclass(frozen=True)
class ProbeResult:
    source: str
    target: str
    address: str
    sent: int
    received: int
    lost_at: tuple[float, ...] = ()  # when each lost probe was found unanswered (ping -D -O)

    @property
    def lost(self) -> int:
        return self.sent - self.received


@dataclass
class NodeKeyRotation:
    batches: list[BatchResult] = field(default_factory=list)
    probe: ProbeResult | None = None
    seconds: float = 0.0


def batches(names: Sequence[str], size: int) -> list[list[str]]:
    """Split hosts into batches of `size` (at least 1), in inventory order."""
    if size < 1:
        raise RotateError(f"--batch must be at least 1, got {size}")
    return [list(names[i:i + size]) for i in range(0, len(names), size)]


class _Fleet:
    def __init__(self, targets: Sequence[SshTarget], runner: Runner, key: Path, interface: str, meshctl: str):
        self.by_name = {t.name: t for t in targets}
        self.runner = runner
        self.key = key
        self.interface = interface
        self.meshctl = meshctl

    def run(self, host: str, step: str, command: str, timeout: float = 60.0) -> str:
        res = self.runner.run(self.by_name[host], self.key, command, timeout=timeout)
        if res.rc != 0:
            raise HostStepError(host, step, res.detail)
        return res.stdout

    def wg_key(self, host: str) -> str:
        return self.run(host, "read WireGuard key", f"wg show {shlex.quote(self.interface)} public-key").strip()

    def wg_peers(self, host: str) -> set[str]:
        out = self.run(host, "list WireGuard peers", f"wg show {shlex.quote(self.interface)} peers")
        return set(out.split())

    def mesh_ipv4(self, host: str) -> str:
        out = self.run(host, "read mesh address", f"ip -o -4 addr show dev {shlex.quote(self.interface)}")
        m = re.search(r"inet (\d+\.\d+\.\d+\.\d+)", out)
        if m is None:
            raise HostStepError(host, "read mesh address", f"no IPv4 address on {self.interface}")
        return m.group(1)


def rotate_node_keys(targets: Sequence[SshTarget], key: Path, *, runner: Runner, batch_size: int = 1,
                     interface: str = "mesh0", meshctl: str = "/opt/meshctl/bin/meshctl",
                     probe: tuple[str, str] | None = None, confirm_timeout: float = 60.0,
                     progress: Progress | None = None, observers: Sequence[SshTarget] = ()) -> NodeKeyRotation:
    """Rotate every target's node key, `batch_size` nodes at a time (see the module docstring)."""
    if not targets:
        raise RotateError("no nodes to rotate")
    fleet = _Fleet([*targets, *observers], runner, key, interface, meshctl)
    say = progress or (lambda host, step, outcome: None)
    result = NodeKeyRotation()
    start = time.monotonic()
    pinger = _start_probe(fleet, probe, say) if probe else None
    try:
        for batch in batches([t.name for t in targets], batch_size):
            done = _one_batch(fleet, batch, confirm_timeout, say)
            if pinger is not None:  # the next batch starts only once the probed pair talks again
                done = replace(done, recovered_seconds=_wait_recovered(fleet, pinger, confirm_timeout, say))
            result.batches.append(done)
    finally:
        if pinger is not None:
            result.probe = _stop_probe(fleet, pinger, say)
    if result.probe is not None:
        result.batches = attribute_losses(result.batches, result.probe.lost_at)
    result.seconds = time.monotonic() - start
    return result


def attribute_losses(done: Sequence[BatchResult], lost_at: Sequence[float]) -> list[BatchResult]:
    """Count each lost probe against the batch running when it was lost (until the next batch starts)."""
    out = []
    for i, b in enumerate(done):
        end = done[i + 1].started_at if i + 1 < len(done) else float("inf")
        n = sum(1 for t in lost_at if b.started_at <= t < end)
        out.append(replace(b, lost_probes=n))
    return out


def parse_ping(out: str) -> tuple[int, int, tuple[float, ...]]:
    """(sent, received, times of unanswered probes) from `ping -D -O` output."""
    m = _PING_SUMMARY.search(out)
    if m is None:
        raise ValueError("no ping summary")
    answered = {int(x) for x in _REPLY.findall(out)}
    lost = {int(seq): float(ts) for ts, seq in _NO_ANSWER.findall(out) if int(seq) not in answered}
    return int(m.group(1)), int(m.group(2)), tuple(sorted(lost.values()))


def _one_batch(fleet: _Fleet, batch: list[str], confirm_timeout: float, say: Progress) -> BatchResult:
    wall = time.time()
    t0 = time.monotonic()
    old = {h: fleet.wg_key(h) for h in batch}
    new: dict[str, str] = {}
    for h in batch:
        fleet.run(h, "rotate node key", f"{shlex.quote(fleet.meshctl)} rotate node-key --json", timeout=90)
        new[h] = fleet.wg_key(h)
        if new[h] == old[h]:
            raise HostStepError(h, "rotate node key", f"WireGuard key is still {old[h]} after the agent's rotation")
        say(h, "rotate node key", f"{old[h][:8]}… -> {new[h][:8]}…")
    observer = next((n for n in fleet.by_name if n not in batch), None)
    t1 = time.monotonic()
    if observer is not None:
        deadline = t1 + confirm_timeout
        while True:
            peers = fleet.wg_peers(observer)
            missing = [h for h in batch if new[h] not in peers]
            stale = [h for h in batch if old[h] in peers]
            if not missing and not stale:
                break
            if time.monotonic() > deadline:
                raise HostStepError(observer, "confirm new keys",
                                    f"after {confirm_timeout:.0f}s its WireGuard peers lack the new key of "
                                    f"{missing or '-'} / still hold the old key of {stale or '-'}",
                                    hint="check meshctl-agent on the observer and the control server")
            time.sleep(0.5)
        say(observer, "peers see new keys", f"{', '.join(batch)} in {time.monotonic() - t1:.1f}s")
    return BatchResult(tuple(batch), old, new, observer, time.monotonic() - t0, time.monotonic() - t1, wall)


@dataclass(frozen=True)
class _Pinger:
    source: str
    target: str
    address: str
    pid: str
    log: str


def _start_probe(fleet: _Fleet, probe: tuple[str, str], say: Progress) -> _Pinger:
    source, target = probe
    for h in probe:
        if h not in fleet.by_name:
            raise RotateError(f"probe host {h!r} is not in the inventory")
    address = fleet.mesh_ipv4(target)
    log = f"/tmp/meshctl-probe-{int(time.time())}.log"
    pid = fleet.run(source, "start probe",
                    f"nohup ping -n -D -O -i 0.2 {shlex.quote(address)} > {log} 2>&1 < /dev/null & echo $!").strip()
    say(source, "probe started", f"ping {target} ({address}) every 0.2s")
    time.sleep(1.0)  # a few probes before the first rotation
    return _Pinger(source, target, address, pid, log)


def _wait_recovered(fleet: _Fleet, p: _Pinger, timeout: float, say: Progress) -> float:
    t0 = time.monotonic()
    while True:
        res = fleet.runner.run(fleet.by_name[p.source], fleet.key, f"ping -n -c 1 -W 1 {shlex.quote(p.address)}")
        if res.rc == 0:
            waited = time.monotonic() - t0
            say(p.source, "probe answered", f"{p.target} reachable again after {waited:.1f}s")
            return waited
        if time.monotonic() - t0 > timeout:
            raise HostStepError(p.source, "wait for traffic", f"{p.target} ({p.address}) still unreachable "
                                f"{timeout:.0f}s after the batch", hint="later batches were not started")


def _stop_probe(fleet: _Fleet, p: _Pinger, say: Progress) -> ProbeResult:
    time.sleep(1.0)  # a few probes after the last rotation
    out = fleet.run(p.source, "stop probe",
                    f"kill -INT {shlex.quote(p.pid)}; sleep 0.5; cat {p.log}; rm -f {p.log}")
    try:
        sent, received, lost_at = parse_ping(out)
    except ValueError:
        raise HostStepError(p.source, "stop probe", f"no ping summary in its output: {out.strip()[-200:]!r}") from None
    result = ProbeResult(p.source, p.target, p.address, sent, received, lost_at)
    say(p.source, "probe stopped", f"{result.sent} sent, {result.lost} lost")
    return result
