"""Run Nix 2.8's `nix-instantiate` from tests: parse files, evaluate expressions to JSON.

State goes to a temporary directory (NIX_STATE_DIR, HOME), so nothing on the machine is written;
evaluation runs with `--readonly-mode` and never builds or copies anything to the store.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
HARNESS = REPO / "tests" / "nix" / "harness.nix"
NIX_INSTANTIATE = shutil.which("nix-instantiate")


@dataclass(frozen=True)
class NixPath:
    """A Nix path literal (`./x`), as opposed to a string."""

    text: str


def to_nix(value: Any) -> str:
    """A Python value as Nix source; dict keys may be attribute paths (`services.meshctl.node`)."""
    if isinstance(value, NixPath):
        return value.text
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value).replace("${", "\\${")
    if isinstance(value, Mapping):
        return "{ " + "".join(f"{k} = {to_nix(v)}; " for k, v in value.items()) + "}"
    if isinstance(value, Sequence):
        return "[ " + " ".join(f"({to_nix(v)})" for v in value) + " ]"
    raise TypeError(f"no Nix form for {value!r}")


class NixError(Exception):
    """`nix-instantiate` exited non-zero; `stderr` holds Nix's message."""

    def __init__(self, stderr: str) -> None:
        super().__init__(stderr)
        self.stderr = stderr


class Nix:
    """`nix-instantiate` with private state directories under `tmp`."""

    def __init__(self, tmp: Path) -> None:
        if NIX_INSTANTIATE is None:
            raise RuntimeError("nix-instantiate not found")
        self.env = {**os.environ, "NIX_STATE_DIR": str(tmp / "state"), "HOME": str(tmp / "home"),
                    "NIX_PATH": ""}
        for d in ("state", "home"):
            (tmp / d).mkdir(exist_ok=True)

    def _run(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        assert NIX_INSTANTIATE is not None
        return subprocess.run([NIX_INSTANTIATE, *args], capture_output=True, text=True, env=self.env,
                              cwd=REPO, timeout=120)

    def parse(self, path: Path) -> str | None:
        """None if `path` parses, else Nix's error message."""
        p = self._run(["--parse", str(path)])
        return None if p.returncode == 0 else p.stderr.strip()

    def parse_text(self, text: str) -> str | None:
        p = self._run(["--parse", "-E", text])
        return None if p.returncode == 0 else p.stderr.strip()

    def eval(self, expr: str) -> Any:
        """Evaluate `expr` strictly to JSON; raises NixError with Nix's message on failure."""
        p = self._run(["--eval", "--strict", "--json", "--readonly-mode", "-E", expr])
        if p.returncode != 0:
            raise NixError(p.stderr)
        return json.loads(p.stdout)


def nix_path(path: Path) -> str:
    """An absolute filesystem path as a Nix path expression, whatever characters it holds."""
    return f"(/. + {to_nix(str(Path(path).resolve()))})"


def harness_expr(lib_path: Path, entry: str, module: Mapping[str, Any], select: str = "") -> str:
    """`(import harness.nix { libPath = …; }).<entry> <module>` plus an optional `.attr` selection."""
    base = f"(import {nix_path(HARNESS)} {{ libPath = {nix_path(lib_path)}; }}).{entry} ({to_nix(module)})"
    return f"({base}){select}"


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def write_toml(path: Path, settings: dict[str, Any]) -> None:
    """What pkgs.formats.toml would render (inline tables instead of sections: same data)."""
    path.write_text("".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in settings.items()))
    assert tomllib.loads(path.read_text()) == settings


def render_unit(unit: Mapping[str, Any], replace: Mapping[str, str], path_env: str | None = None) -> str:
    """A unit file the way NixOS writes one (nixos/lib/systemd-lib.nix: a list gives one line per element,
    booleans are true/false), with each key of `replace` (fake store paths) replaced by its value and,
    if given, `path_env` as PATH instead of the unit's fake store paths."""
    def value(v: Any) -> str:
        return "true" if v is True else "false" if v is False else str(v)

    lines = ["[Unit]", f"Description={unit.get('description', '')}"]
    lines += [f"{k.capitalize()}={v}" for k in ("after", "wants", "requires") for v in unit.get(k, [])]
    lines.append("[Service]")
    if path_env is not None:
        lines.append(f"Environment=PATH={path_env}")
    elif unit.get("path"):
        lines.append("Environment=PATH=" + ":".join(f"{p}/bin" for p in unit["path"]))
    for key, v in unit["serviceConfig"].items():
        lines += [f"{key}={value(x)}" for x in (v if isinstance(v, list) else [v])]
    lines += ["[Install]", *(f"WantedBy={v}" for v in unit.get("wantedBy", []))]
    text = "\n".join(lines) + "\n"
    for old, new in replace.items():
        text = text.replace(old, new)
    return text
