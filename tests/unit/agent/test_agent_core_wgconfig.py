"""Netmap → WireGuard peers diffing and the `wg set` arguments it produces."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshctl.agent.wgconfig import (
    RemovePeer,
    SetPeer,
    WgPeer,
    apply_changes,
    diff_peers,
    reconcile_view,
    set_args,
)
from meshctl.keys import NodePublicKey

K1, K2, K3 = (NodePublicKey(bytes([i]) * 32) for i in (1, 2, 3))
IPS1 = ("100.64.0.1/32", "fd7a:115c:a1e0::1/128")
IPS2 = ("100.64.0.2/32", "fd7a:115c:a1e0::2/128")


def cur(*peers: WgPeer) -> dict[NodePublicKey, WgPeer]:
    return {p.public_key: p for p in peers}


@pytest.mark.parametrize(("current", "desired", "expected"), [
    pytest.param({}, [], [], id="empty"),
    pytest.param({}, [WgPeer(K1, IPS1, "127.0.0.1:5000")],
                 [SetPeer(K1, tuple(sorted(IPS1)), "127.0.0.1:5000", 25)], id="add"),
    pytest.param(cur(WgPeer(K1, IPS1, "127.0.0.1:5000")), [WgPeer(K1, IPS1, "127.0.0.1:5000")], [], id="unchanged"),
    pytest.param(cur(WgPeer(K1, IPS1, "127.0.0.1:5000")), [WgPeer(K1, IPS1, "10.0.0.2:41641")],
                 [SetPeer(K1, None, "10.0.0.2:41641", None)], id="endpoint-only"),
    pytest.param(cur(WgPeer(K1, IPS1, "127.0.0.1:5000")), [WgPeer(K1, (*IPS1, "10.9.0.0/24"), "127.0.0.1:5000")],
                 [SetPeer(K1, tuple(sorted((*IPS1, "10.9.0.0/24"))), None, None)], id="allowed-ips-only"),
    pytest.param(cur(WgPeer(K1, IPS1, "127.0.0.1:5000")), [], [RemovePeer(K1)], id="remove"),
    # a peer that rotated its node key: old removed before the new one claims the same addresses
    pytest.param(cur(WgPeer(K2, IPS2, "127.0.0.1:5001")), [WgPeer(K3, IPS2, "127.0.0.1:5001")],
                 [RemovePeer(K2), SetPeer(K3, tuple(sorted(IPS2)), "127.0.0.1:5001", 25)], id="rekey"),
    # an unknown endpoint (None) never clears the one WireGuard learned by roaming
    pytest.param(cur(WgPeer(K1, IPS1, "10.0.0.2:41641")), [WgPeer(K1, IPS1, None)], [], id="no-endpoint-keeps-roamed"),
    pytest.param(cur(WgPeer(K1, IPS1, "10.0.0.2:41641", 0)), [WgPeer(K1, IPS1, "10.0.0.2:41641", 25)],
                 [SetPeer(K1, None, None, 25)], id="keepalive"),
])
def test_diff(current: dict[NodePublicKey, WgPeer], desired: list[WgPeer], expected: list[object]) -> None:
    assert diff_peers(current, desired) == expected


def test_set_args_render_one_wg_set_call_and_never_a_private_key() -> None:
    changes = [RemovePeer(K2), SetPeer(K1, IPS1, "10.0.0.2:41641", 25), SetPeer(K3, None, "127.0.0.1:9", None),
               SetPeer(K3, None, None, 0)]
    assert set_args(changes) == [
        "peer", K2.to_wireguard_base64(), "remove",
        "peer", K1.to_wireguard_base64(), "endpoint", "10.0.0.2:41641", "persistent-keepalive", "25",
        "allowed-ips", "100.64.0.1/32,fd7a:115c:a1e0::1/128",
        "peer", K3.to_wireguard_base64(), "endpoint", "127.0.0.1:9",
        "peer", K3.to_wireguard_base64(), "persistent-keepalive", "off",
    ]
    assert "private-key" not in set_args(changes)


_peer = st.builds(
    WgPeer,
    st.sampled_from([K1, K2, K3]),
    st.lists(st.sampled_from([*IPS1, *IPS2, "10.0.0.0/8"]), max_size=3).map(tuple),
    st.sampled_from(["127.0.0.1:1", "10.0.0.1:41641"]),
    st.sampled_from([0, 25]),
)


@given(st.lists(_peer, max_size=3), st.lists(_peer, max_size=3))
def test_applying_the_diff_reaches_the_desired_state(before: list[WgPeer], after: list[WgPeer]) -> None:
    current = cur(*before)
    desired = cur(*after)  # last one per key wins, as the daemon builds it
    result = apply_changes(current, diff_peers(current, desired.values()))
    assert result == desired
    assert diff_peers(result, desired.values()) == []


def test_reconcile_keeps_nat_roaming_but_undoes_a_roam_onto_the_relay_and_outside_changes() -> None:
    direct = "198.51.100.7:41641"
    mine = cur(WgPeer(K1, IPS1, direct), WgPeer(K2, IPS2, "127.0.0.1:5001"), WgPeer(K3, IPS1, direct))
    actual = cur(
        WgPeer(K1, IPS1, "198.51.100.7:40001"),  # roamed: the peer's NAT picked another port — keep it
        WgPeer(K2, IPS2, "198.51.100.9:41641"),  # relayed by us, but direct packets arrived — keep it
        WgPeer(K3, IPS1, "127.0.0.1:5002"),  # we chose direct, WireGuard roamed onto the relay: undo
    )
    view = reconcile_view(mine, actual)
    desired = list(mine.values())
    assert diff_peers(view, desired) == [SetPeer(K3, None, direct, None)]
    # an allowed IP changed behind our back, or a peer added by hand, is put right too
    actual2 = cur(WgPeer(K1, ("10.0.0.0/8",), direct), WgPeer(NodePublicKey(b"\x09" * 32), ("10.9.9.9/32",), None))
    view2 = reconcile_view(cur(WgPeer(K1, IPS1, direct)), actual2)
    assert diff_peers(view2, [WgPeer(K1, IPS1, direct)]) == [
        RemovePeer(NodePublicKey(b"\x09" * 32)), SetPeer(K1, tuple(sorted(IPS1)), None, None)]
