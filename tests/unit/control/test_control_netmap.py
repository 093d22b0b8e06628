"""NetMapState: full first frame, deltas in seq order, refusals that leave the state untouched."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshctl.control.errors import MapSequenceError
from meshctl.control.netmap import NetMapState
from meshctl.keys import MachinePrivateKey, NodePrivateKey
from meshctl.wire import DNSConfig, MapResponse, Node, PeerPatch


def node(i: int, **kw: object) -> Node:
    base = {"id": i, "name": f"n{i}", "fqdn": f"n{i}.m", "user": "u", "node_key": NodePrivateKey.generate().public_key(),
                "machine_key": MachinePrivateKey.generate().public_key(), "addresses": (f"100.64.0.{i}/32",),
                "allowed_ips": (f"100.64.0.{i}/32",)}
    base.update(kw)
    return Node(**base)  # type: ignore[arg-type]


def full(seq: int = 1, peers: tuple[Node, ...] = ()) -> MapResponse:
    return MapResponse(seq=seq, node=node(1), peers=peers, dns=DNSConfig(domain="m"))


def test_full_then_deltas() -> None:
    s = NetMapState()
    nm = s.apply(full(1, (node(2), node(3))))
    assert set(nm.peers) == {2, 3} and nm.dns is not None
    nm = s.apply(MapResponse(seq=2, peers_changed=(node(4),), peers_removed=(2,)))
    assert set(nm.peers) == {3, 4}
    nm = s.apply(MapResponse(seq=3, peers_patch=(PeerPatch(id=3, endpoints=("192.0.2.1:1",), online=True),)))
    assert nm.peers[3].endpoints == ("192.0.2.1:1",) and nm.peers[3].online
    nm = s.apply(MapResponse(seq=4, keep_alive=True))
    assert nm.seq == 4 and set(nm.peers) == {3, 4} and nm.dns is not None
    # patch for a peer we do not have is ignored, not invented
    nm = s.apply(MapResponse(seq=5, peers_patch=(PeerPatch(id=99, online=True),)))
    assert 99 not in nm.peers


def test_packet_filter_absent_allows_all_empty_denies_all_delta_keeps() -> None:
    from meshctl.wire import FilterRule, NetPortRange, PortRange

    s = NetMapState()
    assert s.apply(full(1)).packet_filter is None  # no policy: allow all
    rule = FilterRule(src_ips=("100.64.0.2",), dst_ports=(NetPortRange("*", PortRange(22, 22)),))
    deny_all = MapResponse(seq=1, node=node(1), peers=(), dns=DNSConfig(domain="m"), packet_filter=())
    assert NetMapState().apply(deny_all).packet_filter == ()
    s2 = NetMapState()
    s2.apply(MapResponse(seq=1, node=node(1), peers=(), dns=DNSConfig(domain="m"), packet_filter=(rule,)))
    assert s2.apply(MapResponse(seq=2, keep_alive=True)).packet_filter == (rule,)  # delta: unchanged
    assert s2.apply(MapResponse(seq=3, packet_filter=())).packet_filter == ()


def test_first_frame_must_be_full() -> None:
    s = NetMapState()
    with pytest.raises(MapSequenceError, match="first map frame \\(seq 1\\) is not a full netmap"):
        s.apply(MapResponse(seq=1, peers_changed=(node(2),)))
    assert s.netmap is None


@pytest.mark.parametrize("bad_seq", [1, 2, 4, 0])
def test_out_of_order_rejected_and_state_kept(bad_seq: int) -> None:
    s = NetMapState()
    s.apply(full(1, (node(2),)))
    s.apply(MapResponse(seq=2, keep_alive=True))
    before = s.netmap
    with pytest.raises(MapSequenceError) as info:
        s.apply(MapResponse(seq=bad_seq, peers_removed=(2,)))
    assert info.value.want == 3 and info.value.got == bad_seq
    assert s.netmap is before


def test_reset_accepts_a_new_full_map() -> None:
    s = NetMapState()
    s.apply(full(1, (node(2),)))
    s.reset()
    nm = s.apply(full(1, (node(5),)))
    assert set(nm.peers) == {5}


@given(st.lists(st.tuples(st.sampled_from(["add", "remove", "patch"]), st.integers(2, 8)), max_size=30))
def test_delta_sequence_matches_a_model(ops: list[tuple[str, int]]) -> None:
    s = NetMapState()
    s.apply(full(1))
    model: dict[int, tuple[str, ...]] = {}
    for seq, (op, pid) in enumerate(ops, start=2):
        if op == "add":
            s.apply(MapResponse(seq=seq, peers_changed=(node(pid),)))
            model[pid] = ()
        elif op == "remove":
            s.apply(MapResponse(seq=seq, peers_removed=(pid,)))
            model.pop(pid, None)
        else:
            ep = (f"192.0.2.{seq}:1",)
            s.apply(MapResponse(seq=seq, peers_patch=(PeerPatch(id=pid, endpoints=ep),)))
            if pid in model:
                model[pid] = ep
    assert s.netmap is not None
    assert {p: n.endpoints for p, n in s.netmap.peers.items()} == model
