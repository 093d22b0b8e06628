"""Wire types: JSON round trips, field names on the wire, malformed input, and no private key material."""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from datetime import UTC, datetime

import pytest

import meshctl.wire as wire
from meshctl.keys import (
    DiscoPrivateKey,
    MachinePrivateKey,
    NodePrivateKey,
    PrivateKey,
)
from meshctl.wire import (
    DERPMap,
    DerpNode,
    DerpRegion,
    DNSConfig,
    FilterRule,
    HostInfo,
    MapRequest,
    MapResponse,
    NetPortRange,
    Node,
    PeerPatch,
    PortRange,
    SSHConfig,
    WireFormatError,
)

T0 = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
NK = NodePrivateKey.generate().public_key()
MK = MachinePrivateKey.generate().public_key()
DK = DiscoPrivateKey.generate().public_key()


def sample_node(i: int = 1) -> Node:
    return Node(
        id=i, name=f"h{i}", fqdn=f"h{i}.mesh.test", user="alice", node_key=NK, machine_key=MK,
        addresses=(f"100.64.0.{i}/32", f"fd7a:115c:a1e0::{i}/128"),
        allowed_ips=(f"100.64.0.{i}/32", f"fd7a:115c:a1e0::{i}/128"), tags=("tag:web",), key_expiry=T0,
        disco_key=DK, endpoints=("192.0.2.1:41641",), home_derp=900, online=True, last_seen=T0,
        hostinfo=HostInfo(hostname="h1", os="linux", ssh_host_keys=("ssh-ed25519 AAAA host",)),
    )


def sample_derp_map() -> DERPMap:
    node = DerpNode(name="900a", region_id=900, host_name="127.0.0.1", ipv4="127.0.0.1", derp_port=8443,
                    plain_http=True)
    return DERPMap(regions={900: DerpRegion(region_id=900, region_code="lab", region_name="Lab", nodes=(node,))})


def sample_full() -> MapResponse:
    return MapResponse(
        seq=1, control_time=T0, node=sample_node(1), peers=(sample_node(2),), derp_map=sample_derp_map(),
        dns=DNSConfig(domain="mesh.test"),
        packet_filter=(FilterRule(src_ips=("*",), dst_ports=(NetPortRange("*", PortRange(22, 22)),)),),
        ssh=SSHConfig(user_ca_keys=("ssh-ed25519 AAAA ca",)),
    )


SAMPLES: list[object] = [
    sample_node(), HostInfo(hostname="x"), PeerPatch(id=3, endpoints=("192.0.2.1:1",), online=False, last_seen=T0),
    sample_derp_map(), DNSConfig(domain="d"), SSHConfig(), sample_full(),
    MapResponse(seq=5, peers_changed=(sample_node(4),), peers_removed=(2,), peers_patch=(PeerPatch(id=3, home_derp=901),)),
    MapResponse(seq=6, keep_alive=True, control_time=T0),
    MapRequest(node_key=NK, disco_key=DK, endpoints=("192.0.2.1:41641",), home_derp=900, hostinfo=HostInfo("h")),
]


@pytest.mark.parametrize("obj", SAMPLES, ids=lambda o: type(o).__name__)
def test_round_trip_through_json_text(obj: typing.Any) -> None:
    text = json.dumps(obj.to_json())
    assert type(obj).from_json(json.loads(text)) == obj


def test_node_json_uses_design_field_names() -> None:
    d = sample_node().to_json()
    assert set(d) >= {"id", "name", "fqdn", "user", "tags", "nodeKey", "keyExpiry", "machineKey", "discoKey",
                      "addresses", "allowedIPs", "endpoints", "homeDerp", "online", "lastSeen"}
    assert d["nodeKey"].startswith("nodekey:") and d["machineKey"].startswith("mkey:")
    assert d["keyExpiry"] == "2026-11-24T12:00:00Z"


def test_map_response_delta_omits_absent_fields() -> None:
    d = MapResponse(seq=7, peers_removed=(3,)).to_json()
    assert d == {"seq": 7, "peersRemoved": [3]}
    full = sample_full().to_json()
    assert {"peers", "derpMap", "dns", "packetFilter", "ssh", "node", "controlTime"} <= set(full)


def test_derp_map_is_tailscale_go_cased_with_plain_http_extension() -> None:
    d = sample_derp_map().to_json()
    node = d["Regions"]["900"]["Nodes"][0]
    assert node["HostName"] == "127.0.0.1" and node["DERPPort"] == 8443 and node["PlainHTTP"] is True
    assert d["Regions"]["900"]["RegionCode"] == "lab"
    tls_node = DerpNode(name="a", region_id=900, host_name="derp.example").to_json()
    assert "PlainHTTP" not in tls_node  # byte-compatible with tailscale's map when unused


def test_derp_map_parses_tailscale_reference_json() -> None:
    text = """{"Regions": {"900": {"RegionID": 900, "RegionCode": "fra", "RegionName": "Frankfurt",
      "Latitude": 50.1, "Longitude": 8.7, "Avoid": false, "NoMeasureNoHome": false,
      "Nodes": [{"Name": "900a", "RegionID": 900, "HostName": "derp1.example.com", "CertName": "",
      "IPv4": "198.51.100.1", "IPv6": "2001:db8::1", "STUNPort": 0, "STUNOnly": false, "DERPPort": 0,
      "CanPort80": true, "InsecureForTests": false, "STUNTestIP": ""}]}, "1": null}, "omitDefaultRegions": true}"""
    m = DERPMap.from_json(json.loads(text))
    node = m.regions[900].nodes[0]
    assert node.effective_derp_port() == 443 and node.effective_stun_port() == 3478
    assert node.derp_url() == "https://derp1.example.com:443/derp"
    assert list(m.regions) == [900]


@pytest.mark.parametrize(
    ("cls", "data", "message"),
    [
        (Node, {"id": "1"}, "Node: field 'id' want an integer, got str"),
        (Node, {"id": 1, "name": "a", "nodeKey": "mkey:" + "00" * 32, "machineKey": "x"}, "Node: field 'nodeKey'"),
        (MapResponse, [], "MapResponse: want a JSON object, got list"),
        (MapResponse, {"seq": 1, "peersRemoved": ["x"]}, "want a list of node ids"),
        (MapRequest, {"nodeKey": NK.to_text(), "stream": "yes"}, "field 'stream' want true/false"),
        (DERPMap, {"Regions": {"901": {"RegionID": 900}}}, "region under key '901' has RegionID 900"),
        (PeerPatch, {"id": 1, "lastSeen": "yesterday"}, "want an RFC 3339 time"),
    ],
)
def test_malformed_json_names_the_field(cls: typing.Any, data: object, message: str) -> None:
    with pytest.raises(WireFormatError) as info:
        cls.from_json(data)
    assert message in str(info.value)


def test_missing_required_field() -> None:
    with pytest.raises(WireFormatError, match="MapResponse: missing field 'seq'"):
        MapResponse.from_json({})


def test_patch_applies_only_set_fields() -> None:
    node = sample_node(2)
    patched = PeerPatch(id=2, endpoints=("198.51.100.9:1",)).apply(node)
    assert patched.endpoints == ("198.51.100.9:1",) and patched.home_derp == node.home_derp
    assert patched.online == node.online


# --- no private key material can travel in a wire type (DESIGN §2) ---------------------------------

SECRET_NAME = re.compile(r"priv|secret|password|passwd|token|auth_?key|api_?key|mesh_?key|seed|credential", re.I)


def _wire_dataclasses() -> list[type]:
    seen: list[type] = []
    todo = [getattr(wire, name) for name in wire.__all__]
    while todo:
        obj = todo.pop()
        if not (isinstance(obj, type) and dataclasses.is_dataclass(obj)) or obj in seen:
            continue
        seen.append(obj)
        for hint in typing.get_type_hints(obj).values():
            todo.extend(_leaf_types(hint))
    return seen


def _leaf_types(hint: object) -> list[object]:
    args = typing.get_args(hint)
    if not args:
        return [hint]
    out: list[object] = [typing.get_origin(hint)]
    for a in args:
        out.extend(_leaf_types(a))
    return out


def test_walk_finds_every_wire_type() -> None:
    names = {c.__name__ for c in _wire_dataclasses()}
    assert {"Node", "HostInfo", "PeerPatch", "MapRequest", "MapResponse", "DERPMap", "DerpRegion", "DerpNode",
            "DNSConfig", "FilterRule", "NetPortRange", "PortRange", "SSHConfig"} <= names


@pytest.mark.parametrize("cls", _wire_dataclasses(), ids=lambda c: c.__name__)
def test_no_wire_field_can_carry_private_key_material(cls: type) -> None:
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        assert not SECRET_NAME.search(f.name), f"{cls.__name__}.{f.name}: name suggests a secret"
        for leaf in _leaf_types(typing.get_type_hints(cls)[f.name]):
            assert not (isinstance(leaf, type) and issubclass(leaf, PrivateKey)), (
                f"{cls.__name__}.{f.name} can hold a private key ({leaf.__name__})")


def test_walker_catches_a_private_key_field() -> None:
    @dataclasses.dataclass
    class Leaky:
        node_key: NodePrivateKey | None

    leaves = _leaf_types(typing.get_type_hints(Leaky)["node_key"])
    assert any(isinstance(x, type) and issubclass(x, PrivateKey) for x in leaves)
    assert SECRET_NAME.search("node_private_key") and SECRET_NAME.search("authKey")


def test_serialized_full_map_has_no_private_key_prefix() -> None:
    text = json.dumps(sample_full().to_json())
    for prefix in ("privkey:", "mprivkey:", "discoprivkey:", "ctrlprivkey:"):
        assert prefix not in text
