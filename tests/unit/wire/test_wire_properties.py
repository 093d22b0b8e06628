"""Property tests: arbitrary JSON never crashes a wire parser (WireFormatError or a value), and generated
messages survive a JSON round trip."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from meshctl.keys import MachinePrivateKey, NodePrivateKey
from meshctl.wire import DERPMap, HostInfo, MapRequest, MapResponse, Node, PeerPatch, WireFormatError

NK = NodePrivateKey.generate().public_key()
MK = MachinePrivateKey.generate().public_key()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=20,
)
FIELDS = ["seq", "node", "peers", "peersChanged", "peersRemoved", "peersPatch", "derpMap", "dns", "packetFilter",
          "ssh", "keepAlive", "controlTime", "id", "name", "nodeKey", "machineKey", "endpoints", "Regions",
          "hostinfo", "stream"]
message_like = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8)


@settings(max_examples=300)
@given(st.one_of(json_values, message_like), st.sampled_from([MapResponse, MapRequest, Node, PeerPatch, DERPMap,
                                                               HostInfo]))
def test_parsers_raise_only_wire_format_error(data: Any, cls: Any) -> None:
    try:
        cls.from_json(data)
    except WireFormatError:
        pass


times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)).map(
    lambda t: t.replace(microsecond=0))
endpoints = st.lists(st.from_regex(r"\A192\.0\.2\.[0-9]{1,3}:[0-9]{1,5}\Z"), max_size=3).map(tuple)
nodes = st.builds(
    Node, id=st.integers(1, 10**9), name=st.from_regex(r"\A[a-z][a-z0-9-]{0,20}\Z"), fqdn=st.just("x.m"),
    user=st.text(max_size=8), node_key=st.just(NK), machine_key=st.just(MK), addresses=st.just(("100.64.0.1/32",)),
    allowed_ips=st.just(("100.64.0.1/32",)), tags=st.lists(st.just("tag:a"), max_size=1).map(tuple),
    key_expiry=st.none() | times, endpoints=endpoints, home_derp=st.integers(0, 999), online=st.booleans(),
    last_seen=st.none() | times, expired=st.booleans())
patches = st.builds(PeerPatch, id=st.integers(1, 10**9), endpoints=st.none() | endpoints,
                    home_derp=st.none() | st.integers(0, 999), online=st.none() | st.booleans(),
                    last_seen=st.none() | times)
deltas = st.builds(MapResponse, seq=st.integers(1, 2**31), peers_changed=st.lists(nodes, max_size=3).map(tuple),
                   peers_removed=st.lists(st.integers(1, 10**9), max_size=3).map(tuple),
                   peers_patch=st.lists(patches, max_size=3).map(tuple), keep_alive=st.booleans(),
                   control_time=st.none() | times)


@given(deltas)
def test_map_response_round_trip(frame: MapResponse) -> None:
    assert MapResponse.from_json(json.loads(json.dumps(frame.to_json()))) == frame
