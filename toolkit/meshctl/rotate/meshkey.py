"""DERP mesh-key rotation across a region with an overlap window.

The servers of a region dial each other with the mesh key. A mesh-key file may hold several keys, one
per line: the first is the key the server dials with, every listed key is accepted. Rotating from OLD to
NEW goes through three phases, one server restarted at a time, so that at every moment each server's
dial key is accepted by every other server (`unsafe_moments` checks exactly that):

    accept   [OLD, NEW]   dial OLD, accept both
    dial     [NEW, OLD]   dial NEW, accept both      → then the workspace switches to NEW
    (overlap window: every link has re-dialled with NEW)
    retire   [NEW]        OLD is no longer accepted

Before touching anything, every server must say its meshctl accepts key lists
(`meshctl.derp.handshake.parse_mesh_key_file` importable); otherwise nothing is changed.
Keys reach hosts on stdin, never on a command line.
"""

from __future__ import annotations

import secrets
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..keys import read_secret_file, write_secret_file
from .errors import HostStepError, RotateError
from .sshexec import Runner, SshTarget

__all__ = [
    "HOST_MESH_KEY_FILE",
    "PHASES",
    "MeshKeyRotation",
    "parse_key_list",
    "plan_states",
    "render_key_list",
    "rotate_mesh_key",
    "unsafe_moments",
]

HOST_MESH_KEY_FILE = "/etc/meshctl/derp-mesh.key"
PHASES = ("accept", "dial", "retire")
_UNIT = "meshctl-derp.service"
_CAPABILITY = "from meshctl.derp.handshake import parse_mesh_key_file"

Progress = Callable[[str, str, str], None]


def _check(key: str) -> str:
    k = key.strip().lower()
    if len(k) != 64 or any(c not in "0123456789abcdef" for c in k):
        raise RotateError(f"DERP mesh key: want 64 hex characters, got {len(k)} characters")
    return k


def render_key_list(keys: Sequence[str]) -> str:
    """The mesh-key file: the dial key first, then the other accepted keys."""
    if not keys:
        raise RotateError("a mesh-key file needs at least one key")
    return "".join(_check(k) + "\n" for k in dict.fromkeys(keys))


def parse_key_list(text: str) -> list[str]:
    keys = [_check(line) for line in text.splitlines() if line.strip()]
    if not keys:
        raise RotateError("mesh-key file holds no key")
    return keys


def _phase_keys(phase: str, old: str, new: str) -> list[str]:
    return {"accept": [old, new], "dial": [new, old], "retire": [new]}[phase]


def plan_states(servers: Sequence[str], old: str, new: str,
                phases: Sequence[str] = PHASES) -> list[dict[str, list[str]]]:
    """Every fleet state the rotation passes through (one server changes per step)."""
    state = {s: [old] for s in servers}
    states = [dict(state)]
    for phase in phases:
        for s in servers:
            state = {**state, s: _phase_keys(phase, old, new)}
            states.append(state)
    return states


def unsafe_moments(states: Sequence[Mapping[str, Sequence[str]]]) -> list[tuple[int, str, str]]:
    """(step, dialer, listener) wherever a server's dial key is not accepted by another server."""
    bad = []
    for i, state in enumerate(states):
        for a, keys_a in state.items():
            for b, keys_b in state.items():
                if a != b and keys_a[0] not in keys_b:
                    bad.append((i, a, b))
    return bad


@dataclass(frozen=True)
class MeshKeyRotation:
    region: int
    servers: tuple[str, ...]
    phase_seconds: dict[str, float]
    workspace_key: str


def rotate_mesh_key(targets: Sequence[SshTarget], key: Path, workspace_key_file: Path, region: int, *,
                    runner: Runner, overlap: float = 30.0, new_key: str | None = None,
                    progress: Progress | None = None) -> MeshKeyRotation:
    """Rotate region `region`'s mesh key on `targets` (its DERP servers) from the workspace's key to a new one."""
    say = progress or (lambda host, step, outcome: None)
    if len(targets) < 2:
        raise RotateError(f"region {region} has {len(targets)} DERP server(s); a mesh key matters only with two "
                          "or more")
    old = parse_key_list(read_secret_file(workspace_key_file).decode())[0]
    new = _check(new_key) if new_key else secrets.token_hex(32)
    if new == old:
        raise RotateError("the new mesh key equals the current one")
    states = plan_states([t.name for t in targets], old, new)
    assert not unsafe_moments(states), "rotation plan would cut a mesh link"

    unsupported = {}
    for t in targets:
        res = runner.run(t, key, f"/opt/meshctl/bin/python -c {shlex.quote(_CAPABILITY)}")
        if res.rc != 0:
            unsupported[t.name] = res.detail
    if unsupported:
        raise RotateError("DERP servers do not accept mesh-key lists yet, nothing was changed: "
                          + ", ".join(sorted(unsupported)),
                          hint="upgrade meshctl on them (meshctl deploy) to a version whose DERP server reads "
                               "one key per line")
    timings: dict[str, float] = {}
    for phase in PHASES:
        if phase == "retire" and overlap > 0:
            say("*", "overlap", f"waiting {overlap:.0f}s for every mesh link to re-dial with the new key")
            time.sleep(overlap)
        t0 = time.monotonic()
        content = render_key_list(_phase_keys(phase, old, new))
        for t in targets:
            _install(runner, t, key, content, phase)
            say(t.name, f"mesh key {phase}", "restarted, active")
        timings[phase] = time.monotonic() - t0
        if phase == "dial":
            write_secret_file(workspace_key_file, (new + "\n").encode())
    return MeshKeyRotation(region, tuple(t.name for t in targets), timings, workspace_key_file.name)


def _install(runner: Runner, target: SshTarget, key: Path, content: str, phase: str) -> None:
    f = HOST_MESH_KEY_FILE
    script = (f"set -e; umask 077; cat > {f}.new; chmod 600 {f}.new; mv -f {f}.new {f}; "
              f"systemctl restart {_UNIT}; sleep 1; systemctl is-active {_UNIT}")
    res = runner.run(target, key, script, input=content, timeout=60)
    if res.rc != 0:
        raise HostStepError(target.name, f"mesh key {phase}", res.detail,
                            hint="every server still accepts the old key; fix the host and re-run")
