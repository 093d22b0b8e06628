"""The host-side probes of `meshctl verify`, against a real control server and real DERP relays on loopback."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from meshctl.verify.probes import authkey_reuse, derp_unknown, stun

pytestmark = pytest.mark.integration
MESHCTL = str(Path(sys.executable).parent / "meshctl")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not come up")


def start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def stop(p: subprocess.Popen[bytes]) -> None:
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    state = tmp_path_factory.mktemp("control")
    port = free_port()
    p = start([MESHCTL, "control", "serve", "--state-dir", str(state), "--listen", f"127.0.0.1:{port}"],
              state / "log")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        yield state, f"http://127.0.0.1:{port}"
    finally:
        stop(p)


def derp(tmp: Path, verify: tuple[Path, str] | None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    argv = [MESHCTL, "derp", "serve", "--listen", f"127.0.0.1:{port}", "--stun-listen", "",
            "--key-file", str(tmp / "derp.key")]
    if verify is not None:
        state, url = verify
        token = subprocess.run([MESHCTL, "control", "derp-token", "--state-dir", str(state)],
                               capture_output=True, text=True, check=True).stdout.strip().split()[-1]
        tf = tmp / "token"
        tf.write_text(token)
        os.chmod(tf, 0o600)
        argv += ["--verify-url", f"{url}/derp/verify", "--verify-token-file", str(tf)]
    p = start(argv, tmp / "derp.log")
    wait_http(f"http://127.0.0.1:{port}/derp/probe")
    return p, f"http://127.0.0.1:{port}/derp"


def test_authkey_reuse_probe_sees_a_one_off_key_refused(control: tuple[Path, str]) -> None:
    state, url = control
    ok, msg = asyncio.run(authkey_reuse(state, url))
    assert ok, msg
    assert "second use refused" in msg


def test_derp_probe_passes_only_when_admission_refuses(control: tuple[Path, str], tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    guarded, guarded_url = derp(tmp_path / "a", control)
    open_relay, open_url = derp(tmp_path / "b", None)
    try:
        ok, msg = asyncio.run(derp_unknown(guarded_url))
        assert ok, msg
        ok, msg = asyncio.run(derp_unknown(open_url))
        assert not ok and "admitted" in msg
    finally:
        stop(guarded)
        stop(open_relay)
    ok, msg = asyncio.run(derp_unknown(guarded_url))  # nothing listens any more: not a refusal
    assert not ok and "did not complete a handshake" in msg


def test_stun_probe_reports_the_reflexive_address(tmp_path: Path) -> None:
    port, stun_port = free_port(), free_port()
    p = start([MESHCTL, "derp", "serve", "--listen", f"127.0.0.1:{port}", "--stun-listen", f"127.0.0.1:{stun_port}",
               "--key-file", str(tmp_path / "derp.key")], tmp_path / "log")
    try:
        wait_http(f"http://127.0.0.1:{port}/derp/probe")
        ok, msg = stun("127.0.0.1", stun_port)
        assert ok and "sees us as 127.0.0.1:" in msg, msg
    finally:
        stop(p)
    ok, msg = stun("127.0.0.1", stun_port)
    assert not ok and "no STUN answer" in msg
