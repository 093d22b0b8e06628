"""Rendering the netmap's packetFilter into the agent's own nftables table."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshctl.agent.filter import FilterError, NftError, parse_filter, render_removal, render_ruleset

SSH_FROM_ONE = [
    {"srcIPs": ["100.64.0.1", "fd7a:115c:a1e0::1"], "dstPorts": [{"ip": "*", "ports": {"first": 22, "last": 22}}]}
]


QUAD100_GUARD = 'ip daddr 100.100.100.100 iifname != "lo" drop comment "MagicDNS answers this host only"'


def chain_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.startswith("\t\t")]


def test_replacement_is_one_transaction_touching_only_our_table() -> None:
    text = render_ruleset(parse_filter(SSH_FROM_ONE), "mesh0")
    lines = text.splitlines()
    # create-if-absent, delete, re-add: atomic in one `nft -f`, and it works whether or not the table exists
    assert lines[:3] == ["table inet meshctl {}", "delete table inet meshctl", "table inet meshctl {"]
    tables = {line.split("{")[0].strip() for line in lines if line.startswith(("table", "delete"))}
    assert tables == {"table inet meshctl", "delete table inet meshctl"}
    assert "flush ruleset" not in text


def test_rules_accept_listed_traffic_and_drop_the_rest_on_the_mesh_interface_only() -> None:
    body = chain_lines(render_ruleset(parse_filter(SSH_FROM_ONE), "mesh0"))
    assert body[0] == "type filter hook input priority filter; policy accept;"
    assert body[2] == 'iifname != "mesh0" accept'
    assert "ct state established,related accept" in body
    assert 'ip saddr 100.64.0.1/32 meta l4proto { tcp, udp } th dport 22 accept comment "rule 0"' in body
    assert 'ip6 saddr fd7a:115c:a1e0::1/128 meta l4proto { tcp, udp } th dport 22 accept comment "rule 0"' in body
    assert 'ip saddr 100.64.0.1/32 meta l4proto icmp accept comment "rule 0"' in body
    assert body[-1] == 'iifname "mesh0" drop comment "default deny"'


def test_magicdns_is_guarded_from_other_hosts_whatever_the_filter() -> None:
    for packet_filter in (None, [], SSH_FROM_ONE):
        assert chain_lines(render_ruleset(parse_filter(packet_filter)))[1] == QUAD100_GUARD


def test_absent_filter_allows_all_and_empty_filter_denies_all() -> None:
    allow = chain_lines(render_ruleset(None))
    assert allow[-1].startswith('iifname "mesh0" accept')
    assert [line for line in allow if "drop" in line] == [QUAD100_GUARD]
    deny = chain_lines(render_ruleset([]))
    assert not any(line.endswith('accept comment "rule 0"') for line in deny)
    assert deny[-1] == 'iifname "mesh0" drop comment "default deny"'


def test_port_ranges_protocols_and_destinations() -> None:
    rules = parse_filter([
        {"srcIPs": ["100.64.0.0/10"], "dstPorts": [{"ip": "100.64.0.9", "ports": {"first": 8000, "last": 8100}}],
         "ipProto": [6]},
        {"srcIPs": ["*"], "dstPorts": [{"ip": "*", "ports": {"first": 0, "last": 65535}}], "ipProto": [17, 47]},
    ])
    body = chain_lines(render_ruleset(rules, "wg7"))
    assert 'ip saddr 100.64.0.0/10 ip daddr 100.64.0.9/32 meta l4proto tcp th dport 8000-8100 accept comment "rule 0"' in body
    # an IPv4 destination never yields an IPv6 rule
    assert not any(line.startswith("ip6") and "rule 0" in line for line in body)
    # any source, any port: no address or port match, and rendered once, not once per family
    assert body.count('meta l4proto udp accept comment "rule 1"') == 1
    assert body.count('meta l4proto 47 accept comment "rule 1"') == 1


def test_several_sources_become_one_set() -> None:
    rules = parse_filter([{"srcIPs": ["100.64.0.1", "100.64.0.2"], "dstPorts": [{"ip": "*", "ports": {"first": 80}}],
                           "ipProto": [6]}])
    body = chain_lines(render_ruleset(rules))
    assert 'ip saddr { 100.64.0.1/32, 100.64.0.2/32 } meta l4proto tcp th dport 80 accept comment "rule 0"' in body


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"srcIPs": ["100.64.0.1"]}, "packetFilter must be a list, found dict"),
        ([{"srcIPs": [], "dstPorts": [{"ip": "*"}]}], "packetFilter rule 0: srcIPs must be a non-empty list"),
        ([{"srcIPs": ["nope"], "dstPorts": [{"ip": "*"}]}], "packetFilter rule 0: 'nope' is not an IP address"),
        ([{"srcIPs": ["*"], "dstPorts": [{"ip": "*", "ports": {"first": 90, "last": 80}}]}],
         "packetFilter rule 0: port range 90-80 is reversed"),
        ([{"srcIPs": ["*"], "dstPorts": [{"ip": "*", "ports": {"first": 70000}}]}],
         "packetFilter rule 0: port first 70000 is not an integer"),
        ([{"srcIPs": ["*"], "dstPorts": [{"ip": "*"}], "ipProto": ["tcp"]}],
         "packetFilter rule 0: ipProto"),
    ],
)
def test_malformed_rules_are_refused_with_the_rule_index(raw: object, message: str) -> None:
    with pytest.raises(FilterError) as caught:
        parse_filter(raw)
    assert str(caught.value).startswith(message)


def test_names_that_could_inject_ruleset_text_are_refused() -> None:
    with pytest.raises(NftError, match="not a valid Linux interface name"):
        render_ruleset(None, 'mesh0" accept; #')
    with pytest.raises(NftError, match="not a plain nftables identifier"):
        render_ruleset(None, "mesh0", table="x; flush ruleset")


def test_removal_declares_then_deletes() -> None:
    assert render_removal() == "table inet meshctl {}\ndelete table inet meshctl\n"


@pytest.mark.skipif(shutil.which("nft") is None, reason="nft is not installed")
@pytest.mark.parametrize("packet_filter", [None, [], SSH_FROM_ONE])
def test_nft_accepts_the_rendered_syntax(packet_filter: object, tmp_path: object) -> None:
    # `nft -c` only parses and checks the transaction: nothing is installed.
    done = subprocess.run(["nft", "-c", "-f", "-"], input=render_ruleset(parse_filter(packet_filter)),
                          capture_output=True, text=True, check=False)
    if done.returncode != 0 and "Operation not permitted" in done.stderr:
        pytest.skip("nft -c needs CAP_NET_ADMIN")
    assert done.returncode == 0, done.stderr


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70000) | st.sampled_from(["*", "100.64.0.1", "fd7a::/48", "x", ""]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["srcIPs", "dstPorts", "ip", "ports", "first", "last", "ipProto"]), children,
                      max_size=5),
    max_leaves=20,
)


@given(_json)
def test_any_json_is_either_rendered_or_refused_with_a_filter_error(raw: object) -> None:
    try:
        rules = parse_filter(raw)
    except FilterError:
        return
    text = render_ruleset(rules)
    assert text.startswith("table inet meshctl {}\ndelete table inet meshctl\n")


def test_wire_filter_rules_from_the_netmap_are_accepted_as_they_are() -> None:
    from meshctl.wire.mapmsg import MapResponse

    netmap = MapResponse.from_json({"seq": 1, "packetFilter": SSH_FROM_ONE})
    assert netmap.packet_filter is not None
    assert render_ruleset(parse_filter(netmap.packet_filter)) == render_ruleset(parse_filter(SSH_FROM_ONE))
    deny_all = MapResponse.from_json({"seq": 2, "packetFilter": []})
    assert deny_all.packet_filter == ()
    assert parse_filter(deny_all.packet_filter) == []  # an empty tuple is deny-all, not "no filter"
