"""Agents behind NAT routers in namespaces (root): hole punching through an easy NAT, relay for a hard one.

    n1: on the shared bridge (no NAT)
    n2: behind an endpoint-independent NAT (masquerade keeping ports) — reached direct at the NAT's address
        after CallMeMaybe makes n2 send first
    n3: behind a hard NAT (masquerade fully-random: a new port per destination) — n2 and n3 cannot open a
        direct path, so they stay on DERP and still reach each other
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from .agent_mesh_harness import Mesh, mesh_lifecycle, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.root]


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    with mesh_lifecycle("meshctl-agent-nat-") as m:
        m.build(1)
        m.add_natted("n2", 2, "easy")
        m.add_natted("n3", 3, "hard")
        m.start_derp()
        m.start_control()
        key = m.mint_auth_key()
        for a in m.agents.values():
            m.start_agent(a, key)
        yield m


def test_node_behind_easy_nat_reports_its_stun_endpoint_and_goes_direct(mesh: Mesh) -> None:
    n1, n2 = mesh.agents["n1"], mesh.agents["n2"]
    # local address + the NAT's address from STUN through the disco socket (port kept, so 41642 - 1)
    wait_for("n2 reports its NAT endpoint", lambda: f"{n2.wan}:41641" in n2.status()["self"]["endpoints"], timeout=30)
    assert f"{n2.ip}:41641" in n2.status()["self"]["endpoints"]
    wait_for("n1 <-> n2 direct through the NAT", lambda: n1.peer("n2")["path"] == "direct"
             and n2.peer("n1")["path"] == "direct", timeout=30)
    # WireGuard talks to the NAT's public address; the port is whatever the NAT mapped n2's WireGuard socket
    # to (Linux keeps 41641 unless n1's earlier probes left a clashing conntrack entry; roaming follows it)
    # (polled: a relayed packet still in flight can roam WireGuard back to the relay socket for a moment,
    # which the agent undoes on its next heartbeat)
    assert wait_for("n1's WireGuard endpoint for n2 at the NAT", lambda: n1.peer("n2")["path"] == "direct"
                    and str(n1.peer("n2")["endpoint"]).startswith(f"{n2.wan}:"), timeout=15)
    assert wait_for("ping n1 -> n2", lambda: mesh.ping(n1, n2.mesh_ip()), timeout=15)
    assert wait_for("ping n2 -> n1", lambda: mesh.ping(n2, n1.mesh_ip()), timeout=15)


def test_easy_and_hard_nat_pair_stays_relayed_and_still_talks(mesh: Mesh) -> None:
    n2, n3 = mesh.agents["n2"], mesh.agents["n3"]
    assert wait_for("ping n2 -> n3", lambda: mesh.ping(n2, n3.mesh_ip()), timeout=30)
    assert wait_for("ping n3 -> n2", lambda: mesh.ping(n3, n2.mesh_ip()), timeout=15)
    # several discovery rounds (5 s apart) come and go: no direct path through a hard NAT
    time.sleep(11)
    assert n2.peer("n3")["path"] == "relay(900)"
    assert n3.peer("n2")["path"] == "relay(900)"
    assert mesh.ping(n2, n3.mesh_ip())


def test_public_node_reaches_the_hard_nat_node(mesh: Mesh) -> None:
    n1, n3 = mesh.agents["n1"], mesh.agents["n3"]
    assert wait_for("ping n1 -> n3", lambda: mesh.ping(n1, n3.mesh_ip()), timeout=30)
    assert wait_for("ping n3 -> n1", lambda: mesh.ping(n3, n1.mesh_ip()), timeout=15)
    # and keeps reaching it over a few path re-evaluations, whatever path it settles on
    for _ in range(6):
        time.sleep(2)
        assert mesh.ping(n1, n3.mesh_ip(), count=2)
