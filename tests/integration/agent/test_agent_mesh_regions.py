"""Two DERP regions (root): a relayed pair whose nodes call different regions home.

n1's home is region 900 and n2's is 901 (pinned with `derp_home`). With direct UDP between them blocked,
each side sends over the *peer's* home region — n1 dials region 901 to reach n2, n2 dials 900 to reach
n1 — and they still talk.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .agent_mesh_harness import Mesh, mesh_lifecycle, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.root]


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    with mesh_lifecycle("meshctl-agent-regions-") as m:
        m.build(2)
        m.start_derp(900)
        m.start_derp(901)
        m.start_control()
        m.agent_extra = {"n1": "derp_home = 900\n", "n2": "derp_home = 901\n"}
        n1, n2 = m.agents["n1"], m.agents["n2"]
        # direct UDP between the two is dropped from the start: only DERP can carry them
        m.exec(n1.ns, ["nft", "-f", "-"], input=(
            "table inet mstest {\n"
            f"  chain o {{ type filter hook output priority 0; ip daddr {n2.ip} meta l4proto udp drop; }}\n"
            f"  chain i {{ type filter hook input priority 0; ip saddr {n2.ip} meta l4proto udp drop; }}\n}}\n"))
        key = m.mint_auth_key()
        for a in m.agents.values():
            m.start_agent(a, key)
        yield m


def test_relayed_pair_with_different_home_regions_talks_through_each_others_home(mesh: Mesh) -> None:
    n1, n2 = mesh.agents["n1"], mesh.agents["n2"]
    wait_for("homes reported", lambda: n1.status()["self"]["homeDerp"] == 900
             and n2.status()["self"]["homeDerp"] == 901, timeout=20)
    # each side labels the relay with the peer's home region, where it sends
    wait_for("n1 relays to n2 via 901", lambda: n1.peer("n2")["path"] == "relay(901)", timeout=30)
    wait_for("n2 relays to n1 via 900", lambda: n2.peer("n1")["path"] == "relay(900)", timeout=30)
    assert wait_for("ping n1 -> n2", lambda: mesh.ping(n1, n2.mesh_ip()), timeout=20)
    assert wait_for("ping n2 -> n1", lambda: mesh.ping(n2, n1.mesh_ip()), timeout=20)
    assert "dialling region 901" in (n1.proc.tail(200) if n1.proc else "")
    assert "dialling region 900" in (n2.proc.tail(200) if n2.proc else "")
