"""Shared fixtures of the e2e tier: ONE lab for the whole session, used by every area's e2e tests.

`lab` (session scope) brings up the lab named `e2e` (or `$MESHCTL_E2E_LAB`) — control, derp1, node1 (public), node2 (easy NAT),
node3 (hard NAT) — or reuses it when it is already up with that shape, sets `MESHCTL_LAB` to its name for
`inventories/lab.py`, and always tears it down at the end of the session. The tier skips (with the reason)
only when the machine cannot run a lab at all: not root, or systemd-nspawn/debootstrap missing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from meshctl.lab import LabError, LabState, Nat, check_prerequisites, down, up

# CI runs one session; engineers running e2e sessions side by side on one machine pick their own name
E2E_LAB = os.environ.get("MESHCTL_E2E_LAB", "e2e")
E2E_SHAPE: dict[str, object] = {"nodes": 3, "derps": 1, "nat": {"node2": Nat.EASY, "node3": Nat.HARD}}


def lab_skip_reason() -> str | None:
    """Why this machine cannot run a lab, or None when it can."""
    try:
        check_prerequisites()
    except LabError as err:
        return f"e2e needs a lab: {err}"
    return None


@pytest.fixture(scope="session")
def lab_machine() -> None:
    """Skip unless this machine can run labs (root, systemd-nspawn, debootstrap)."""
    reason = lab_skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def lab(lab_machine: None) -> Iterator[LabState]:
    """The session's lab (`e2e`), with MESHCTL_LAB pointing inventories/lab.py at it."""
    previous = os.environ.get("MESHCTL_LAB")
    try:
        state = up(E2E_LAB, progress=lambda line: print(f"[lab] {line}"), **E2E_SHAPE)  # type: ignore[arg-type]
        os.environ["MESHCTL_LAB"] = E2E_LAB
        yield state
    finally:
        if previous is None:
            os.environ.pop("MESHCTL_LAB", None)
        else:
            os.environ["MESHCTL_LAB"] = previous
        down(E2E_LAB)
