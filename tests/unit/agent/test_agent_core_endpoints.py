"""The port convention between WireGuard endpoints (reported to control) and disco addresses (pinged)."""

from __future__ import annotations

from meshctl.agent.disco import Endpoint
from meshctl.agent.magicsock import disco_candidates


def test_reported_wireguard_endpoints_map_to_disco_addresses_one_port_up() -> None:
    got = disco_candidates(["10.0.0.2:41641", "[fd7a:115c:a1e0::2]:41641", "203.0.113.9:1000"])
    assert got == {Endpoint("10.0.0.2", 41642), Endpoint("fd7a:115c:a1e0::2", 41642), Endpoint("203.0.113.9", 1001)}


def test_unusable_endpoints_are_skipped_not_fatal() -> None:
    # garbage from a buggy peer, port 0, and the last port (its disco port would not exist)
    assert disco_candidates(["nonsense", "10.0.0.2", "10.0.0.3:0", "10.0.0.4:65535", "1.2.3.4:x"]) == set()
