"""Fixtures for the agent mesh tests: one mesh (control + DERP + three agents) per test module."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .agent_mesh_harness import Mesh, have_tools, wait_for


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
    reason = have_tools()
    if reason is not None:
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="meshctl-agent-it-"))
    m = Mesh(root)
    try:
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
    except BaseException:
        print(m.logs())
        raise
    finally:
        m.close()
        shutil.rmtree(root, ignore_errors=True)
