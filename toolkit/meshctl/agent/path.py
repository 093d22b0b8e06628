"""Path selection for one peer: relayed through DERP, or direct over UDP (a pure state machine).

Every peer starts relayed. While relayed, the agent pings every candidate disco address of the peer
every 5 s and asks the peer (CallMeMaybe over DERP) to ping back at the same moment, so stateful
firewalls and NATs on both sides see outbound packets first. The first pong selects that address
as the direct path. While direct, a heartbeat ping goes to it every 3 s and each pong trusts it for
6.5 s more; when the trust runs out the peer falls back to DERP and discovery starts again. Every
60 s a direct peer whose latency is not already "good enough" (5 ms) probes all candidates for a
better address. Timers are tailscale's magicsock values (reference §10.1).

Inputs are events with `now` (seconds, any monotonic origin); outputs are actions for the shell:
send a ping to an address, send CallMeMaybe over DERP, switch WireGuard's endpoint. Addresses here
are the peer's *disco* addresses; the shell maps them to WireGuard endpoints.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .disco import TX_ID_LEN, Endpoint

__all__ = [
    "DISCOVERY_INTERVAL",
    "GOOD_ENOUGH_LATENCY",
    "HEARTBEAT_INTERVAL",
    "PING_TIMEOUT",
    "REACTIVE_PING_GAP",
    "TRUST_DURATION",
    "UPGRADE_INTERVAL",
    "Action",
    "PeerPath",
    "SendCallMeMaybe",
    "SendPing",
    "UseDirect",
    "UseRelay",
]

HEARTBEAT_INTERVAL = 3.0
TRUST_DURATION = 6.5
PING_TIMEOUT = 5.0
DISCOVERY_INTERVAL = 5.0
UPGRADE_INTERVAL = 60.0
GOOD_ENOUGH_LATENCY = 0.005
#: a ping answering the peer's ping or CallMeMaybe is skipped if we pinged that address this recently
REACTIVE_PING_GAP = 2.0


@dataclass(frozen=True)
class SendPing:
    addr: Endpoint
    tx_id: bytes


@dataclass(frozen=True)
class SendCallMeMaybe:
    """Send our endpoints to the peer over DERP so it pings us back now."""


@dataclass(frozen=True)
class UseDirect:
    addr: Endpoint
    latency: float


@dataclass(frozen=True)
class UseRelay:
    reason: str


Action = SendPing | SendCallMeMaybe | UseDirect | UseRelay


@dataclass
class _Outstanding:
    addr: Endpoint
    sent_at: float


@dataclass
class PeerPath:
    """The path state of one peer. Call `tick` often (every ~0.5 s) and feed it pongs, pings and CallMeMaybes."""

    now: float
    candidates: set[Endpoint] = field(default_factory=set)
    new_tx_id: Callable[[], bytes] = lambda: os.urandom(TX_ID_LEN)
    best: Endpoint | None = None
    latency: float | None = None
    trust_until: float = 0.0
    last_pong_at: float | None = None
    next_discovery: float = field(init=False)
    next_heartbeat: float = field(init=False)
    pings: dict[bytes, _Outstanding] = field(default_factory=dict)
    last_ping_to: dict[Endpoint, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.candidates = set(self.candidates)
        self.next_discovery = self.now
        self.next_heartbeat = self.now

    @property
    def direct(self) -> bool:
        return self.best is not None

    def set_candidates(self, now: float, candidates: Iterable[Endpoint]) -> list[Action]:
        """The peer's endpoints changed (netmap): probe new ones at once if we are not direct yet."""
        new = set(candidates)
        added = new - self.candidates
        self.candidates = new
        if added and not self.direct:
            self.next_discovery = now
        return self.tick(now)

    def tick(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for tx, out in list(self.pings.items()):
            if now - out.sent_at >= PING_TIMEOUT:
                del self.pings[tx]
        if self.best is not None and now >= self.trust_until:
            actions.append(UseRelay(f"no pong from {self.best} for {TRUST_DURATION} s"))
            self.best, self.latency = None, None
            self.next_discovery = now
        if self.best is not None and now >= self.next_heartbeat:
            actions.append(self._ping(now, self.best))
            self.next_heartbeat = now + HEARTBEAT_INTERVAL
        if now >= self.next_discovery:
            if self.best is None:
                actions += [self._ping(now, a) for a in sorted(self.candidates, key=str)]
                actions.append(SendCallMeMaybe())
                self.next_discovery = now + DISCOVERY_INTERVAL
            else:
                if self.latency is None or self.latency > GOOD_ENOUGH_LATENCY:
                    actions += [self._ping(now, a) for a in sorted(self.candidates, key=str) if a != self.best]
                self.next_discovery = now + UPGRADE_INTERVAL
        return actions

    def on_pong(self, now: float, tx_id: bytes) -> list[Action]:
        """A pong for one of our pings (matched by transaction id; unknown ids are ignored)."""
        out = self.pings.pop(tx_id, None)
        if out is None:
            return []
        latency = now - out.sent_at
        if out.addr == self.best:
            self.latency, self.trust_until, self.last_pong_at = latency, now + TRUST_DURATION, now
            return []
        if self.best is None or self._better(latency):
            self.best, self.latency = out.addr, latency
            self.trust_until, self.last_pong_at = now + TRUST_DURATION, now
            self.next_heartbeat = now + HEARTBEAT_INTERVAL
            self.next_discovery = now + UPGRADE_INTERVAL
            return [UseDirect(out.addr, latency)]
        return []

    def on_ping(self, now: float, src: Endpoint) -> list[Action]:
        """The peer pinged us over UDP from `src` (we answer with a pong elsewhere): it is a candidate
        too, and pinging it back right away opens our side of the path."""
        self.candidates.add(src)
        if self.best == src:
            return []
        return self._reactive(now, [src])

    def on_call_me_maybe(self, now: float, endpoints: Iterable[Endpoint]) -> list[Action]:
        """The peer asked (over DERP) to be pinged on its endpoints now."""
        eps = sorted(set(endpoints), key=str)
        self.candidates.update(eps)
        if self.best is not None and (self.latency or 0.0) <= GOOD_ENOUGH_LATENCY:
            return []
        return self._reactive(now, [a for a in eps if a != self.best])

    def _reactive(self, now: float, addrs: list[Endpoint]) -> list[Action]:
        return [self._ping(now, a) for a in addrs
                if now - self.last_ping_to.get(a, float("-inf")) >= REACTIVE_PING_GAP]

    def _better(self, latency: float) -> bool:
        cur = self.latency if self.latency is not None else float("inf")
        return cur > GOOD_ENOUGH_LATENCY and latency < cur * 0.9 - 0.001

    def _ping(self, now: float, addr: Endpoint) -> SendPing:
        tx = self.new_tx_id()
        self.pings[tx] = _Outstanding(addr, now)
        self.last_ping_to[addr] = now
        return SendPing(addr, tx)
