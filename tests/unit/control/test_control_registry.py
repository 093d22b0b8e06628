"""Registry, policy and mapper (pure, no server): who is told about a change, coalescing, frame contents,
unique names, and that one change touches each open stream once rather than rebuilding maps."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from meshctl.control.config import ControlConfig
from meshctl.control.mapper import Mapper
from meshctl.control.policy import PeerPolicy
from meshctl.control.records import NodeRecord
from meshctl.control.registry import Change, MapSession, Registry
from meshctl.control.service import sanitize_name
from meshctl.keys import ControlPrivateKey, MachinePrivateKey, NodePrivateKey
from meshctl.wire import MapResponse

NOW = 1_800_000_000.0
CTRL = ControlPrivateKey.generate()


def rec(i: int, **kw: object) -> NodeRecord:
    base = NodeRecord(id=i, machine_key=MachinePrivateKey.generate().public_key(),
                      node_key=NodePrivateKey.generate().public_key(), name=f"n{i}", ipv4=f"100.64.{i // 250}.{i % 250 + 1}",
                      ipv6=f"fd7a:115c:a1e0::{i:x}", created_at=NOW, authorized=True, key_expiry=NOW + 86400)
    return replace(base, **kw)  # type: ignore[arg-type]


def load(frame: bytes | None) -> Any:
    assert frame is not None
    return json.loads(frame)


def setup(n: int) -> tuple[Registry, Mapper, dict[int, MapSession]]:
    reg = Registry(PeerPolicy())
    for i in range(1, n + 1):
        reg.put(rec(i))
    mapper = Mapper(ControlConfig(domain="m.test"), reg)
    sessions = {}
    for i in range(1, n + 1):
        s = MapSession(i, CTRL.box(reg.nodes[i].machine_key))
        reg.open_session(s)
        mapper.full_frame(s, NOW)
        sessions[i] = s
    return reg, mapper, sessions


def test_full_frame_has_everything_and_parses() -> None:
    reg, mapper, _sessions = setup(4)
    reg.put(rec(5, authorized=False))
    reg.put(rec(6, key_expiry=NOW - 1))
    s = MapSession(1, CTRL.box(reg.nodes[1].machine_key))
    frame = MapResponse.from_json(json.loads(mapper.full_frame(s, NOW)))
    assert frame.node is not None and frame.node.id == 1 and frame.node.fqdn == "n1.m.test"
    assert frame.peers is not None and sorted(p.id for p in frame.peers) == [2, 3, 4]  # not pending 5, expired 6
    assert frame.dns is not None and frame.derp_map is not None and frame.packet_filter is None


def test_change_touches_each_other_stream_once_and_coalesces() -> None:
    reg, mapper, sessions = setup(50)
    touched = reg.notify(7, Change.PATCH)
    assert touched == 50  # 49 peers + node 7's own stream
    reg.notify(7, Change.PATCH)
    reg.notify(7, Change.CHANGED)
    reg.notify(7, Change.PATCH)
    assert sessions[1].pending == {7: Change.CHANGED}
    frame = load(mapper.delta_frame(sessions[1], NOW))
    assert [p["id"] for p in frame["peersChanged"]] == [7] and "peersPatch" not in frame
    assert mapper.delta_frame(sessions[1], NOW) is None  # nothing pending any more


def test_patch_frame_carries_only_patch_fields() -> None:
    reg, mapper, sessions = setup(3)
    reg.put(replace(reg.nodes[2], endpoints=("192.0.2.2:41641",), home_derp=901))
    reg.notify(2, Change.PATCH)
    frame = load(mapper.delta_frame(sessions[1], NOW))
    assert frame["peersPatch"] == [{"id": 2, "endpoints": ["192.0.2.2:41641"], "homeDerp": 901, "online": True}]
    assert frame["seq"] == 2


def test_removed_and_expired_peers_become_peers_removed() -> None:
    reg, mapper, sessions = setup(4)
    reg.remove(3)
    reg.notify(3, Change.CHANGED, include_self=False)
    reg.put(replace(reg.nodes[4], key_expiry=NOW - 5))
    reg.notify(4, Change.CHANGED)
    frame = load(mapper.delta_frame(sessions[1], NOW))
    assert sorted(frame["peersRemoved"]) == [3, 4]
    own = load(mapper.delta_frame(sessions[4], NOW))
    assert own["node"]["expired"] is True


def test_seq_increases_by_one_per_frame() -> None:
    reg, mapper, sessions = setup(2)
    s = sessions[1]
    seqs = [load(mapper.keepalive_frame(s, NOW))["seq"]]
    reg.notify(2, Change.PATCH)
    seqs.append(load(mapper.delta_frame(s, NOW))["seq"])
    seqs.append(load(mapper.keepalive_frame(s, NOW))["seq"])
    assert seqs == [2, 3, 4]


def test_offline_nodes_are_not_in_the_audience() -> None:
    reg, _, sessions = setup(5)
    reg.close_session(sessions[2])
    reg.close_session(sessions[3])
    assert reg.notify(1, Change.PATCH) == 3  # streams of 4, 5 and node 1 itself


def test_new_stream_closes_the_old_one_and_online_is_tracked() -> None:
    reg, _, sessions = setup(2)
    newer = MapSession(1, sessions[1].box)
    assert reg.open_session(newer) is False  # still online
    assert sessions[1].closing
    assert reg.close_session(sessions[1]) is False
    assert reg.close_session(newer) is True and not reg.is_online(1)


@pytest.mark.parametrize(("hostname", "label"), [("Web-01.example.com", "web-01"), ("héllo wörld", "h-llo-w-rld"),
                                                  ("---", "node"), ("a" * 80, "a" * 63), ("", "node")])
def test_sanitize_name(hostname: str, label: str) -> None:
    assert sanitize_name(hostname) == label


def test_unique_names() -> None:
    reg = Registry(PeerPolicy())
    reg.put(rec(1, name="web"))
    reg.put(rec(2, name="web-1"))
    assert reg.unique_name("web") == "web-2"
    assert reg.unique_name("db") == "db"
    assert reg.unique_name("web", except_id=1) == "web"
    reg.put(rec(3, name="x" * 63))
    assert reg.unique_name("x" * 63) == "x" * 61 + "-1"


def test_presence_only_changes_are_not_urgent() -> None:
    reg, mapper, sessions = setup(3)
    reg.notify(2, Change.PRESENCE, include_self=False)
    assert sessions[1].pending == {2: Change.PRESENCE} and not sessions[1].urgent
    frame = load(mapper.delta_frame(sessions[1], NOW))
    assert frame["peersPatch"][0]["online"] is True
    reg.notify(2, Change.PRESENCE, include_self=False)
    reg.notify(3, Change.PATCH, include_self=False)
    assert sessions[1].urgent
    load(mapper.delta_frame(sessions[1], NOW))
    assert not sessions[1].urgent
    reg.notify(1, Change.PRESENCE)  # a node's own record changing is always urgent for its own stream
    assert sessions[1].urgent
