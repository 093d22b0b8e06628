"""The CLI skeleton: --version, keys generate/show (checked against wireguard-tools), init, one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from meshctl import __version__
from meshctl.cli import app
from meshctl.keys import NodePrivateKey, load_private_key

runner = CliRunner()


def test_version() -> None:
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == f"meshctl {__version__}"


def test_generate_prints_only_the_public_key(tmp_path: Path) -> None:
    out = tmp_path / "k"
    r = runner.invoke(app, ["keys", "generate", "node", "--out", str(out)])
    assert r.exit_code == 0, r.output
    key = load_private_key(out, NodePrivateKey)
    assert r.stdout.strip() == key.public_key().to_text()
    assert key.to_text() not in r.output and key.to_wireguard_base64() not in r.output
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600


@pytest.mark.skipif(shutil.which("wg") is None, reason="wireguard-tools (wg) not installed; make bootstrap installs it")
def test_generated_node_key_matches_wg_pubkey(tmp_path: Path) -> None:
    out = tmp_path / "k"
    r = runner.invoke(app, ["keys", "generate", "node", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    priv_b64 = load_private_key(out, NodePrivateKey).to_wireguard_base64()
    wg_pub = subprocess.run(["wg", "pubkey"], input=priv_b64 + "\n", capture_output=True, text=True, check=True)
    assert info["wireguard"] == wg_pub.stdout.strip()
    shown = runner.invoke(app, ["keys", "show", str(out), "--json"])
    assert json.loads(shown.stdout)["wireguard"] == wg_pub.stdout.strip()


def test_show_refuses_world_readable_file_with_the_fix(tmp_path: Path) -> None:
    out = tmp_path / "k"
    assert runner.invoke(app, ["keys", "generate", "node", "--out", str(out)]).exit_code == 0
    os.chmod(out, 0o644)
    r = runner.invoke(app, ["keys", "show", str(out)])
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "readable by group or others (mode 0644)" in lines[0] and f"chmod 600 {out}" in lines[0]
    assert "Traceback" not in r.output


def test_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "k"
    assert runner.invoke(app, ["keys", "generate", "machine", "--out", str(out)]).exit_code == 0
    before = out.read_bytes()
    r = runner.invoke(app, ["keys", "generate", "machine", "--out", str(out)])
    assert r.exit_code == 1 and "already exists" in r.stderr
    assert out.read_bytes() == before


@pytest.mark.parametrize("kind", ["machine", "node", "disco", "control", "derp"])
def test_show_every_kind(tmp_path: Path, kind: str) -> None:
    out = tmp_path / kind
    gen = runner.invoke(app, ["keys", "generate", kind, "--out", str(out), "--json"])
    shown = runner.invoke(app, ["keys", "show", str(out), "--json"])
    assert gen.exit_code == shown.exit_code == 0
    g, s = json.loads(gen.stdout), json.loads(shown.stdout)
    assert s["kind"] == kind and s["public"] == g["public"] and s["mode"] == "0600"


def test_bad_kind_is_a_usage_error() -> None:
    r = runner.invoke(app, ["keys", "generate", "nope"])
    assert r.exit_code == 2


def test_init_creates_workspace_and_refuses_to_overwrite(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    r = runner.invoke(app, ["init", str(ws), "--domain", "corp.internal", "--name", "corp"])
    assert r.exit_code == 0, r.output
    conf = tomllib.loads((ws / "mesh.toml").read_text())
    assert conf["mesh"] == {
        "name": "corp",
        "domain": "corp.internal",
        "ipv4_prefix": "100.64.0.0/10",
        "ipv6_prefix": "fd7a:115c:a1e0::/48",
    }
    assert conf["control"]["url"]
    assert conf["derp"]["regions"][0]["id"] == 900
    secrets = ws / "secrets"
    assert stat.S_IMODE(os.stat(secrets).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(secrets / "deploy_ed25519").st_mode) == 0o600
    pub = (secrets / "deploy_ed25519.pub").read_text()
    assert pub.startswith("ssh-ed25519 ") and "meshctl-deploy@corp" in pub
    if shutil.which("ssh-keygen"):
        derived = subprocess.run(["ssh-keygen", "-y", "-f", str(secrets / "deploy_ed25519")],
                                 capture_output=True, text=True, check=True).stdout.split()[:2]
        assert derived == pub.split()[:2]
    snapshot = {p: p.read_bytes() for p in ws.rglob("*") if p.is_file()}
    again = runner.invoke(app, ["init", str(ws)])
    assert again.exit_code == 1
    assert "already holds a meshctl workspace" in again.stderr
    assert {p: p.read_bytes() for p in ws.rglob("*") if p.is_file()} == snapshot


def test_init_rejects_bad_domain(tmp_path: Path) -> None:
    r = runner.invoke(app, ["init", str(tmp_path / "w"), "--domain", "bad domain"])
    assert r.exit_code == 1 and "domain" in r.stderr
    assert not (tmp_path / "w" / "mesh.toml").exists()


def _command_paths() -> list[list[str]]:
    import typer.main

    root = typer.main.get_command(app)
    paths: list[list[str]] = []

    def walk(cmd: object, prefix: list[str]) -> None:
        paths.append(prefix)
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, [*prefix, name])

    walk(root, [])
    return paths


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "meshctl")
def test_every_command_has_working_help(path: list[str]) -> None:
    r = runner.invoke(app, [*path, "--help"])
    assert r.exit_code == 0, r.output
    assert "Usage:" in r.stdout
