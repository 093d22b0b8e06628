"""Fixtures for the agent mesh tests: one mesh (control + DERP + three agents) per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .agent_mesh_harness import Mesh, mesh_lifecycle, wait_for


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    rep = yield
    if rep.when == "call":
        item.stash[_FAILED] = rep.failed
    return rep


_FAILED = pytest.StashKey[bool]()


@pytest.fixture(autouse=True)
def _mesh_logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """When a mesh test fails, show the tail of every server's and agent's log."""
    yield
    if request.node.stash.get(_FAILED, False) and "mesh" in request.fixturenames:
        print(request.getfixturevalue("mesh").logs())


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    with mesh_lifecycle("meshctl-agent-it-") as m:
        m.build(3)
        m.start_derp()
        m.start_control()
        key = m.mint_auth_key()
        for a in m.agents.values():
            m.start_agent(a, key)
        names = set(m.agents)
        for a in m.agents.values():
            wait_for(f"{a.name} sees every peer", lambda a=a: {p["name"] for p in a.status()["peers"]}
                     == names - {a.name}, timeout=30)
        yield m
