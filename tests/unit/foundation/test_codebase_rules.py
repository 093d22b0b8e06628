"""Codebase rules: every module has a docstring; pure cores import no I/O; imports never point up the layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[3] / "toolkit" / "meshctl"
MODULES = sorted(p for p in PKG.rglob("*.py") if "migrations/versions" not in str(p))

# Modules that must stay sans-IO: bytes/state in, events/bytes out, `now` passed in.
PURE = [
    "keys/base.py", "keys/kinds.py", "keys/wireguard.py", "keys/tokens.py",
    "wire/node.py", "wire/mapmsg.py", "wire/derpmap.py",
    "stun/message.py", "derp/frames.py", "derp/handshake.py", "derp/http.py", "derp/limits.py",
    "control/sealing.py", "control/netmap.py", "control/ipam.py", "control/policy.py",
    "agent/wgconfig.py", "agent/path.py", "agent/disco.py", "rotate/policy.py",
]
IO_MODULES = {
    "asyncio": "pure cores are driven by a shell's event loop",
    "socket": "pure cores never touch sockets",
    "subprocess": "pure cores never run commands",
    "httpx": "pure cores never do HTTP",
    "time": "time is an argument (`now`), not read inside a core",
    "sqlite3": "storage belongs to the store shell",
    "sqlalchemy": "storage belongs to the store shell",
    "fastapi": "HTTP routing belongs to the server shell",
}

# Layering: an import never points up (DESIGN §1). Each package lists packages it must not import.
FORBIDDEN = {
    "keys": {"wire", "stun", "derp", "control", "agent", "deploy", "verify", "rotate", "lab", "cli"},
    "wire": {"stun", "derp", "control", "agent", "deploy", "verify", "rotate", "lab", "cli"},
    "stun": {"derp", "control", "agent", "deploy", "verify", "rotate", "lab", "cli"},
    "derp": {"control", "agent", "deploy", "verify", "rotate", "lab", "cli"},
    "control": {"agent", "deploy", "verify", "rotate", "lab", "cli"},
    "agent": {"deploy", "verify", "rotate", "lab", "cli"},
    "deploy": {"cli"},
    "verify": {"cli"},
    "rotate": {"cli"},
    "lab": {"cli", "deploy", "verify", "rotate", "control", "agent", "derp"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    rel_pkg = path.relative_to(PKG).parts
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(rel_pkg[:-1])[: len(rel_pkg) - node.level]
                mod = ".".join(["meshctl", *base] + ([node.module] if node.module else []))
                found.add(mod)
                if not node.module:
                    found.update(f"{mod}.{a.name}" for a in node.names)
            elif node.module:
                found.add(node.module)
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_module_has_docstring(path: Path) -> None:
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert doc and len(doc.split()) >= 3, f"{path.relative_to(PKG)}: module docstring must say what it is"


@pytest.mark.parametrize("rel", PURE)
def test_pure_cores_do_no_io(rel: str) -> None:
    path = PKG / rel
    assert path.exists(), f"{rel} is listed as a pure core but does not exist: update PURE"
    top = {m.split(".")[0] for m in _imports(path)}
    bad = {m: why for m, why in IO_MODULES.items() if m in top}
    assert not bad, f"{rel} imports I/O modules: {bad}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_never_point_up(path: Path) -> None:
    parts = path.relative_to(PKG).parts
    if len(parts) < 2 or parts[0] not in FORBIDDEN:
        return
    banned = FORBIDDEN[parts[0]]
    bad = sorted(m for m in _imports(path) if m.startswith("meshctl.") and m.split(".")[1] in banned)
    assert not bad, f"{path.relative_to(PKG)} ({parts[0]}) must not import {bad}"
