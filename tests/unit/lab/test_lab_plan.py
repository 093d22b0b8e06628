"""Lab plans: host names, roles, addresses, NAT placement, and prefix choice that never collides."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshctl.lab.plan import (
    Nat,
    Role,
    candidate_prefixes,
    choose_prefix,
    parse_nat_options,
    plan_lab,
    root_veth_name,
    validate_lab_name,
)


def test_default_shape_names_roles_and_public_addresses() -> None:
    plan = plan_lab("lab", "10.201.7", nodes=3, derps=1)
    assert [(h.name, h.role) for h in plan.hosts] == [
        ("control", Role.CONTROL), ("derp1", Role.DERP), ("node1", Role.NODE), ("node2", Role.NODE),
        ("node3", Role.NODE),
    ]
    assert [h.address for h in plan.hosts] == ["10.201.7.10", "10.201.7.21", "10.201.7.101", "10.201.7.102",
                                               "10.201.7.103"]
    for host in plan.hosts:
        assert host.public_address == host.address == host.ssh_hostname
        assert host.netns == f"mlab-lab-{host.name}"
        assert host.router_netns is None and host.nat is Nat.NONE


def test_natted_node_sits_on_its_own_lan_and_is_reached_through_its_router() -> None:
    plan = plan_lab("e2e", "10.250.3", nodes=3, derps=1, nat={"node2": Nat.EASY, "node3": Nat.HARD})
    node2, node3 = plan.host("node2"), plan.host("node3")
    assert (node2.address, node2.lan_gateway, node2.public_address) == ("192.168.2.2", "192.168.2.1", "10.250.3.202")
    assert (node3.nat, node3.router_netns) == (Nat.HARD, "mlab-e2e-node3-nat")
    assert node3.ssh_hostname == "10.250.3.203" and node3.ssh_port == 22
    # every address on the lab internet is distinct and inside the lab's /24, clear of gateway and this machine
    net = ipaddress.IPv4Network(plan.network)
    public = [h.public_address for h in plan.hosts]
    assert len(set(public)) == len(public)
    assert all(ipaddress.IPv4Address(a) in net for a in public)
    assert {plan.gateway, plan.root_address}.isdisjoint(public)


@given(nodes=st.integers(1, 50), derps=st.integers(0, 9), data=st.data())
def test_addresses_never_collide_for_any_shape(nodes: int, derps: int, data: st.DataObject) -> None:
    natted = data.draw(st.sets(st.integers(1, nodes)))
    kinds = {f"node{i}": data.draw(st.sampled_from([Nat.EASY, Nat.HARD])) for i in natted}
    plan = plan_lab("x", "10.222.0", nodes=nodes, derps=derps, nat=kinds)
    public = [h.public_address for h in plan.hosts] + [plan.gateway, plan.root_address]
    assert len(set(public)) == len(public)
    namespaces = [h.netns for h in plan.hosts] + [h.router_netns for h in plan.hosts if h.router_netns]
    assert len(set(namespaces)) == len(namespaces)
    assert plan.bridge_netns not in namespaces


def test_plan_rejects_bad_shapes_with_the_reason() -> None:
    with pytest.raises(ValueError, match="node7, which is not a node"):
        plan_lab("lab", "10.200.0", nodes=3, nat={"node7": Nat.EASY})
    with pytest.raises(ValueError, match="--nodes 0"):
        plan_lab("lab", "10.200.0", nodes=0)
    with pytest.raises(ValueError, match="--derps 10"):
        plan_lab("lab", "10.200.0", derps=10)


@pytest.mark.parametrize("name", ["", "Lab", "1lab", "my-lab", "a" * 13, "lab/x"])
def test_lab_names_that_cannot_become_namespace_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="lowercase"):
        validate_lab_name(name)


def test_nat_options_parse_and_report_what_is_wrong() -> None:
    assert parse_nat_options(["node2=easy", "node3=hard"]) == {"node2": Nat.EASY, "node3": Nat.HARD}
    with pytest.raises(ValueError, match="wanted NODE=easy or NODE=hard"):
        parse_nat_options(["node2"])
    with pytest.raises(ValueError, match="'medium' is not one of easy, hard"):
        parse_nat_options(["node2=medium"])


def test_prefix_is_stable_per_name_and_skips_networks_in_use() -> None:
    first = choose_prefix("lab", [])
    assert first == choose_prefix("lab", [])
    assert first == candidate_prefixes("lab")[0]
    taken = [ipaddress.IPv4Network(f"{first}.0/24")]
    second = choose_prefix("lab", taken)
    assert second != first
    # a wider route covering the candidate also counts as taken; a default route does not
    wide = ipaddress.IPv4Network(f"{first}.0/24").supernet(new_prefix=16)
    assert not ipaddress.IPv4Network(f"{choose_prefix('lab', [wide])}.0/24").overlaps(wide)
    assert choose_prefix("lab", [ipaddress.IPv4Network("0.0.0.0/0")]) == first


def test_two_names_get_two_prefixes_when_the_first_is_recorded() -> None:
    a = choose_prefix("alpha", [])
    b = choose_prefix("beta", [ipaddress.IPv4Network(f"{a}.0/24")])
    assert a != b


def test_root_veth_name_fits_an_interface_name_and_differs_per_lab() -> None:
    assert len(root_veth_name("abcdefghijkl")) <= 15
    assert root_veth_name("lab") != root_veth_name("e2e")


def test_inotify_limit_is_raised_only_when_the_lab_would_not_fit() -> None:
    from meshctl.lab.limits import INSTANCES_PER_HOST, needed_inotify_limit

    assert needed_inotify_limit(in_use=60, hosts=10, current=128) == 1024  # Debian's default 128 is too small
    assert needed_inotify_limit(in_use=60, hosts=10, current=8192) is None
    big = needed_inotify_limit(in_use=900, hosts=50, current=1024)
    assert big is not None and big >= 900 + 50 * INSTANCES_PER_HOST
