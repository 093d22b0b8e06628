"""The CLI end to end: bootstrap commands on the store, `meshctl control serve` as a real subprocess,
the operator commands over HTTP, schema checks, key file modes, and logs free of secrets."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from meshctl.control.client import ControlClient
from meshctl.keys import ControlPublicKey, MachinePrivateKey, NodePrivateKey

from .conftest import free_port, hostinfo, run

pytestmark = pytest.mark.integration
MESHCTL = str(Path(sys.executable).with_name("meshctl"))


def meshctl(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MESHCTL_")}
    full_env.update(env or {})
    p = subprocess.run([MESHCTL, *args], capture_output=True, text=True, timeout=60, env=full_env)
    if check:
        assert p.returncode == 0, f"meshctl {' '.join(args)}: {p.stderr}"
    return p


class Served:
    def __init__(self, proc: subprocess.Popen[str], url: str, state: Path, log: Path) -> None:
        self.proc, self.url, self.state, self.log = proc, url, state, log


def write_config(tmp_path: Path, port: int, db_url: str) -> Path:
    cfg = tmp_path / "control.toml"
    cfg.write_text(f"""
listen = "127.0.0.1:{port}"
state_dir = "{tmp_path / 'state'}"
db = "{db_url}"
domain = "mesh.example"
node_key_expiry = "30d"
ephemeral_timeout = "1m"

[[derp.regions]]
id = 900
code = "lab"
name = "Lab"

[[derp.regions.nodes]]
name = "900a"
host_name = "127.0.0.1"
ipv4 = "127.0.0.1"
derp_port = 8443
stun_port = 3478
plain_http = true
""")
    return cfg


def start_served(tmp_path: Path, db_url: str) -> Iterator[Served]:
    port = free_port()
    cfg = write_config(tmp_path, port, db_url)
    log = tmp_path / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen([MESHCTL, "control", "serve", "--config", str(cfg)], stdout=out, stderr=subprocess.STDOUT,
                                text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 20
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise AssertionError(f"server did not start: {log.read_text()}")
            time.sleep(0.1)
        yield Served(proc, url, tmp_path / "state", log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_bootstrap_serve_and_operate(tmp_path: Path, db_url: str) -> None:
    state = tmp_path / "state"
    base = ["--state-dir", str(state), "--db", db_url]
    # an empty database is not current; --check says so in one line and exits non-zero
    p = meshctl("control", "migrate", *base, "--check", check=False)
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "schema is at nothing" in p.stderr
    assert meshctl("control", "migrate", *base).stdout.strip() == "schema at 0001 (head 0001): up to date"
    assert "up to date" in meshctl("control", "migrate", *base).stdout  # idempotent
    meshctl("control", "migrate", *base, "--check")
    api_key = meshctl("control", "admin-key", *base).stdout.strip()
    assert api_key.startswith("mskey-api-")
    ak = json.loads(meshctl("control", "authkey", *base, "--reusable", "--tag", "tag:web", "--expiry", "2h",
                            "--json").stdout)
    assert ak["key"].startswith("mskey-auth-") and ak["tags"] == ["tag:web"] and ak["reusable"] is True
    derp_token = meshctl("control", "derp-token", *base).stdout.strip()
    assert derp_token.startswith("mskey-derp-")

    served_gen = start_served(tmp_path, db_url)
    served = next(served_gen)
    try:
        key_file = state / "control.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        pub = ControlPublicKey.from_text((state / "control.pub").read_text())
        assert meshctl("control", "key", "--state-dir", str(state)).stdout.strip() == pub.to_text()
        assert httpx.get(served.url + "/key", timeout=5).json() == {"controlKey": pub.to_text(), "protocol": 1}

        async def join() -> int:
            async with ControlClient(served.url, pub, MachinePrivateKey.generate()) as c:
                await c.fetch_control_key()
                res = await c.register(NodePrivateKey.generate(), auth_key=ak["key"], hostinfo=hostinfo("web"))
                assert res.node is not None and res.node.tags == ("tag:web",) and res.node.key_expiry is None
                return res.node.id

        node_id = run(join())
        key_path = tmp_path / "api-key"
        key_path.write_text(api_key + "\n")
        key_path.chmod(0o600)
        conn = ["--control-url", served.url, "--api-key-file", str(key_path)]
        nodes = json.loads(meshctl("nodes", "list", *conn, "--json").stdout)
        assert [(n["id"], n["name"], n["fqdn"]) for n in nodes] == [(node_id, "web", "web.mesh.example")]
        env = {"MESHCTL_CONTROL_URL": served.url, "MESHCTL_API_KEY": api_key}
        renamed = json.loads(meshctl("nodes", "rename", str(node_id), "web1", "--json", env=env).stdout)
        assert renamed["name"] == "web1"
        assert "web1" in meshctl("nodes", "list", env=env).stdout
        created = json.loads(meshctl("authkeys", "create", "--ephemeral", "--json", env=env).stdout)
        assert created["ephemeral"] is True and created["key"].startswith("mskey-auth-")
        listed = json.loads(meshctl("authkeys", "list", "--json", env=env).stdout)
        assert {k["id"] for k in listed} == {ak["id"], created["id"]} and all("key" not in k for k in listed)
        meshctl("authkeys", "expire", created["id"], env=env)
        new_api = json.loads(meshctl("apikeys", "create", "--expiry", "1d", "--json", env=env).stdout)
        assert len(json.loads(meshctl("apikeys", "list", "--json", env=env).stdout)) == 2
        meshctl("users", "create", "carol", env=env)
        assert "carol" in meshctl("users", "list", env=env).stdout
        # errors are one line on stderr and exit 1
        p = meshctl("nodes", "show", "9999", env=env, check=False)
        assert p.returncode == 1 and p.stderr.strip().startswith("error:") and "no node with id 9999" in p.stderr
        assert p.stderr.strip().count("\n") == 0
        p = meshctl("nodes", "list", env={"MESHCTL_CONTROL_URL": served.url, "MESHCTL_API_KEY": "mskey-api-x"},
                    check=False)
        assert p.returncode == 1 and "401" in p.stderr
        # DERP admission with the bootstrap token
        r = httpx.post(served.url + "/derp/verify", headers={"Authorization": f"Bearer {derp_token}"},
                       json={"NodePublic": nodes[0]["nodeKey"], "Source": "127.0.0.1"}, timeout=5)
        assert r.json() == {"Allow": True}
        # local status on the control host
        st = json.loads(meshctl("control", "status", *base, "--json").stdout)
        assert st["nodes"] == 1 and st["schemaCurrent"] is True and st["controlKey"] == pub.to_text()
        assert st["expiredButListed"] == 0
        # openapi is served
        spec = httpx.get(served.url + "/openapi.json", timeout=5).json()
        assert "/api/v1/nodes" in spec["paths"] and "/api/v1/authkeys" in spec["paths"]
    finally:
        for _ in served_gen:
            pass
    log = served.log.read_text()
    private_text = (state / "control.key").read_text()
    for secret in (api_key, ak["key"], derp_token, new_api["key"], created["key"], private_text.strip(),
                   private_text.strip().split(":")[-1]):
        assert secret not in log
    assert "ctrlprivkey:" not in log and "mskey-" not in log


def test_start_refuses_newer_schema(tmp_path: Path) -> None:
    db = tmp_path / "control.db"
    url = f"sqlite:///{db}"
    meshctl("control", "migrate", "--state-dir", str(tmp_path / "state"), "--db", url)
    with sqlite3.connect(db) as c:
        c.execute("UPDATE alembic_version SET version_num = '9999_future'")
    p = meshctl("control", "serve", "--state-dir", str(tmp_path / "state"), "--db", url, "--listen",
                f"127.0.0.1:{free_port()}", check=False)
    assert p.returncode == 1
    assert "schema revision 9999_future is newer than this meshctl knows (head 0001)" in p.stderr
    p = meshctl("control", "migrate", "--state-dir", str(tmp_path / "state"), "--db", url, "--check", check=False)
    assert p.returncode == 1 and "newer than this meshctl knows" in p.stderr
    with sqlite3.connect(db) as c:  # nothing was touched
        assert c.execute("SELECT version_num FROM alembic_version").fetchall() == [("9999_future",)]


def test_control_key_before_first_start(tmp_path: Path) -> None:
    p = meshctl("control", "key", "--state-dir", str(tmp_path), check=False)
    assert p.returncode == 1 and f"no control key in {tmp_path} yet" in p.stderr


def test_serve_refuses_bad_config(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('listen = "127.0.0.1:1"\nbogus = 1\n')
    p = meshctl("control", "serve", "--config", str(cfg), check=False)
    assert p.returncode == 1 and "unknown keys ['bogus']" in p.stderr
    cfg.write_text('[[derp.regions]]\nid = 5\n')
    p = meshctl("control", "serve", "--config", str(cfg), check=False)
    assert p.returncode == 1 and "id must be in 900-999" in p.stderr
