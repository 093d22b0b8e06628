"""Path state machine: table-driven scenarios on a fake clock (times in seconds)."""

from __future__ import annotations

import itertools

import pytest

from meshctl.agent.disco import Endpoint
from meshctl.agent.path import (
    DISCOVERY_INTERVAL,
    HEARTBEAT_INTERVAL,
    TRUST_DURATION,
    UPGRADE_INTERVAL,
    Action,
    PeerPath,
    SendCallMeMaybe,
    SendPing,
    UseDirect,
    UseRelay,
)

A = Endpoint("192.0.2.1", 41642)
B = Endpoint("198.51.100.7", 41642)
C = Endpoint("203.0.113.9", 41642)


def make(now: float = 0.0, *cands: Endpoint) -> PeerPath:
    counter = itertools.count()
    return PeerPath(now, set(cands), new_tx_id=lambda: next(counter).to_bytes(12, "big"))


def pings(actions: list[Action]) -> dict[Endpoint, bytes]:
    return {a.addr: a.tx_id for a in actions if isinstance(a, SendPing)}


def test_starts_relayed_and_probes_every_candidate_with_call_me_maybe() -> None:
    p = make(0.0, A, B)
    acts = p.tick(0.0)
    assert not p.direct
    assert set(pings(acts)) == {A, B}
    assert SendCallMeMaybe() in acts
    assert not any(isinstance(a, UseDirect | UseRelay) for a in acts)


def test_first_pong_upgrades_to_direct_with_measured_latency() -> None:
    p = make(0.0, A, B)
    tx = pings(p.tick(0.0))
    assert p.on_pong(0.020, tx[B]) == [UseDirect(B, 0.020)]
    assert p.direct and p.best == B
    # the slower pong from A, not better enough, does not flap the path
    assert p.on_pong(0.030, tx[A]) == []
    assert p.best == B


def test_unknown_or_stale_pong_is_ignored() -> None:
    p = make(0.0, A)
    tx = pings(p.tick(0.0))
    assert p.on_pong(0.01, b"\xff" * 12) == []
    p.tick(5.0)  # ping timed out and was forgotten
    assert p.on_pong(5.01, tx[A]) == []
    assert not p.direct


def test_relayed_discovery_repeats_every_5s_while_no_pong() -> None:
    p = make(0.0, A)
    p.tick(0.0)
    assert pings(p.tick(DISCOVERY_INTERVAL - 0.1)) == {}
    acts = p.tick(DISCOVERY_INTERVAL)
    assert set(pings(acts)) == {A} and SendCallMeMaybe() in acts


def test_hard_nat_stays_relayed() -> None:
    p = make(0.0, A, B)
    for step in range(0, 120):
        for a in p.tick(step * 0.5):
            assert not isinstance(a, UseDirect)
    assert not p.direct


# (time, event, expected path after) — heartbeat answered until t=9, then silence
def test_heartbeat_every_3s_keeps_trust_and_silence_falls_back_after_6_5s() -> None:
    p = make(0.0, A)
    p.on_pong(0.001, pings(p.tick(0.0))[A])
    assert p.direct
    answered_until = 9.5
    t, fell_back_at = 0.0, None
    heartbeats: list[float] = []
    while t < 20.0:
        t = round(t + 0.5, 3)
        for a in p.tick(t):
            if isinstance(a, SendPing) and a.addr == A:
                heartbeats.append(t)
                if t <= answered_until:
                    p.on_pong(t + 0.001, a.tx_id)
            if isinstance(a, UseRelay):
                fell_back_at = t
    # first heartbeat 3 s after the upgrading pong (0.001 → first tick 3.5), then every 3 s
    assert heartbeats[:3] == [3.5, 6.5, 9.5]
    assert fell_back_at is not None
    # last pong at 9.501 → trusted until 16.001 → fallback on the first tick after that
    assert fell_back_at == 16.5
    assert not p.direct


def test_fallback_restarts_discovery_at_once_and_recovers() -> None:
    p = make(0.0, A)
    p.on_pong(0.001, pings(p.tick(0.0))[A])
    acts = p.tick(TRUST_DURATION + 0.1)
    assert any(isinstance(a, UseRelay) for a in acts)
    assert SendCallMeMaybe() in acts  # discovery restarted on the same tick
    tx = pings(acts)[A]
    assert p.on_pong(TRUST_DURATION + 0.2, tx) == [UseDirect(A, pytest.approx(0.1))]


def test_upgrade_probe_every_60s_switches_to_clearly_better_address() -> None:
    p = make(0.0, A, B)
    tx = pings(p.tick(0.0))
    p.on_pong(0.050, tx[A])  # A answers first, 50 ms
    assert p.best == A
    t, upgrade_pings = 0.0, {}
    while t < UPGRADE_INTERVAL + 1:
        t = round(t + 0.5, 3)
        acts = p.tick(t)
        for a in acts:
            if isinstance(a, SendPing) and a.addr == A:
                p.on_pong(t + 0.050, a.tx_id)
            elif isinstance(a, SendPing) and a.addr == B:
                upgrade_pings[t] = a.tx_id
    assert list(upgrade_pings) == [60.5]  # exactly one probe of B: first tick 60 s after the pong at 0.05
    (when, tx_b), = upgrade_pings.items()
    assert p.on_pong(when + 0.002, tx_b) == [UseDirect(B, pytest.approx(0.002))]


def test_good_enough_latency_skips_upgrade_probes() -> None:
    p = make(0.0, A, B)
    tx = pings(p.tick(0.0))
    p.on_pong(0.001, tx[A])
    seen_b = False
    t = 0.0
    while t < 2 * UPGRADE_INTERVAL:
        t = round(t + 0.5, 3)
        for a in p.tick(t):
            if isinstance(a, SendPing):
                seen_b |= a.addr == B
                if a.addr == A:
                    p.on_pong(t + 0.001, a.tx_id)
    assert not seen_b and p.best == A


def test_call_me_maybe_pings_new_endpoints_now_but_not_twice_in_a_row() -> None:
    p = make(0.0)
    p.tick(0.0)
    acts = p.on_call_me_maybe(0.5, [B, C])
    assert set(pings(acts)) == {B, C}
    assert p.candidates == {B, C}
    assert p.on_call_me_maybe(1.0, [B, C]) == []  # rate limited (would loop ping ↔ ping otherwise)
    assert set(pings(p.on_call_me_maybe(3.0, [B]))) == {B}


def test_incoming_ping_adds_peer_reflexive_candidate_and_pings_back() -> None:
    p = make(0.0, A)
    p.tick(0.0)
    acts = p.on_ping(0.1, C)
    assert set(pings(acts)) == {C}
    assert C in p.candidates
    p.on_pong(0.11, pings(acts)[C])
    assert p.best == C
    assert p.on_ping(0.2, C) == []  # already our direct path: heartbeat covers it


def test_new_candidate_from_netmap_is_probed_immediately_when_relayed() -> None:
    p = make(0.0, A)
    p.tick(0.0)
    acts = p.set_candidates(1.0, [A, B])
    assert set(pings(acts)) == {A, B}
    assert p.set_candidates(1.5, [A, B]) == []


def test_heartbeat_interval_constant_matches_tailscale() -> None:
    assert (HEARTBEAT_INTERVAL, TRUST_DURATION, DISCOVERY_INTERVAL, UPGRADE_INTERVAL) == (3.0, 6.5, 5.0, 60.0)
