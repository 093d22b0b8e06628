"""`meshctl derp serve` as a real process: config file + flag overrides, key file created in derper's JSON
shape with mode 0600, one start line with the public key (never the private key), relaying, STUN,
clean exit on SIGTERM, and one-line errors for bad configuration."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from meshctl.keys import DerpPrivateKey, load_private_key
from meshctl.stun.client import probe_blocking

from .derp_helpers import assert_pair_works, run

pytestmark = pytest.mark.integration

MESHCTL = [str(Path(sys.executable).parent / "meshctl")]


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_from_config_file(tmp_path: Path) -> None:
    derp_port, stun_port = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM)
    key_file = tmp_path / "state" / "derp.key"
    config = tmp_path / "derp.toml"
    config.write_text(f'listen = "127.0.0.1:1"\nstun_listen = "127.0.0.1:{stun_port}"\n'
                      f'key_file = "{key_file}"\nregion_id = 900\n')
    proc = subprocess.Popen([*MESHCTL, "derp", "serve", "--config", str(config), "--listen", f"127.0.0.1:{derp_port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        key = load_private_key(key_file, DerpPrivateKey)
        assert key.public_key().to_text() in line
        assert f"http://127.0.0.1:{derp_port}/derp" in line and f"udp 127.0.0.1:{stun_port}" in line
        assert "region 900" in line
        assert key.to_text() not in line and key.secret_bytes().hex() not in line
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
        assert json.loads(key_file.read_text()) == {"PrivateKey": key.to_text()}
        run(lambda: assert_pair_works(f"http://127.0.0.1:{derp_port}/derp"))
        ip, port = probe_blocking("127.0.0.1", stun_port)
        assert ip == "127.0.0.1" and port > 0
        pinged = subprocess.run([*MESHCTL, "derp", "ping", f"http://127.0.0.1:{derp_port}/derp", "-c", "2",
                                 "--server-key", key.public_key().to_text(), "--json"],
                                capture_output=True, text=True, timeout=30)
        assert pinged.returncode == 0, pinged.stderr
        out = json.loads(pinged.stdout)
        assert out["serverKey"] == key.public_key().to_text() and len(out["rttMs"]) == 2
        stunned = subprocess.run([*MESHCTL, "derp", "stun", f"127.0.0.1:{stun_port}", "--json"],
                                 capture_output=True, text=True, timeout=30)
        assert stunned.returncode == 0, stunned.stderr
        assert json.loads(stunned.stdout)["ip"] == "127.0.0.1"
        wrong = subprocess.run([*MESHCTL, "derp", "ping", f"http://127.0.0.1:{derp_port}/derp",
                                "--server-key", DerpPrivateKey.generate().public_key().to_text()],
                               capture_output=True, text=True, timeout=30)
        assert wrong.returncode == 1 and wrong.stderr.startswith("error: DERP server key is nodekey:")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0
    rest = proc.stderr.read() if proc.stderr else ""
    assert key.to_text() not in rest


@pytest.mark.parametrize(("args", "message"), [
    (["--listen", "nonsense"], "error: listen: want HOST:PORT, got 'nonsense'"),
    (["--tls-cert", "/nonexistent.pem"], "error: tls_cert and tls_key must be given together"),
    (["--verify-url", "http://127.0.0.1:9/derp/verify"], "error: verify_url needs verify_token_file"),
    (["--mesh-with", "http://127.0.0.1:9/derp"], "error: mesh_with needs mesh_key_file"),
])
def test_bad_configuration_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    proc = subprocess.run([*MESHCTL, "derp", "serve", "--key-file", str(tmp_path / "k"), *args],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert proc.stderr.startswith(message), proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_config_key_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "derp.toml"
    config.write_text('listen = "127.0.0.1:0"\nverify_ur1 = "http://typo"\n')
    proc = subprocess.run([*MESHCTL, "derp", "serve", "--config", str(config)], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 1
    assert f"error: DERP config {config}: unknown keys verify_ur1" in proc.stderr
