"""Private OpenSSH servers on 127.0.0.1 for rotation tests (each in its own mount namespace, /run on tmpfs)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"


@dataclass
class PrivateSshd:
    name: str
    dir: Path
    port: int
    authorized_keys: Path
    known_hosts_line: str
    proc: subprocess.Popen[bytes]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sshd(base: Path, name: str, extra_config: str = "", hostkey: str = "hostkey") -> PrivateSshd:
    """Start sshd for `base/name` (a host key already there is kept, so certificates can be made first)."""
    d = base / name
    d.mkdir(parents=True, exist_ok=True)
    if not (d / hostkey).exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / hostkey)], check=True)
    port = _free_port()
    authorized = d / "authorized_keys"
    authorized.touch(mode=0o600)
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/{hostkey}\nAuthorizedKeysFile {authorized}\n"
        f"PasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\nUsePAM no\n"
        f"PidFile {d}/sshd.pid\nPermitRootLogin prohibit-password\n{extra_config}\n"
    )
    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f"mount -t tmpfs none /run && mkdir -p /run/sshd && exec {SSHD} -D -e -f {d}/sshd_config"],
        stdout=subprocess.DEVNULL, stderr=open(d / "sshd.log", "wb"),  # noqa: SIM115
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"sshd {name} exited: {(d / 'sshd.log').read_text()}") from None
            time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError(f"sshd {name} did not listen on {port}")
    hostpub = (d / f"{hostkey}.pub").read_text().split()
    return PrivateSshd(name, d, port, authorized, f"[127.0.0.1]:{port} {hostpub[0]} {hostpub[1]}", proc)


def stop_sshd(s: PrivateSshd) -> None:
    if s.proc.poll() is None:
        s.proc.send_signal(signal.SIGTERM)
        try:
            s.proc.wait(5)
        except subprocess.TimeoutExpired:
            s.proc.kill()
            s.proc.wait()


def need_root_sshd() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the private sshd runs in its own mount namespace and logs users in as root")
    if not (shutil.which("unshare") and os.path.exists(SSHD)):
        pytest.skip("needs unshare and /usr/sbin/sshd (apt-get install openssh-server util-linux)")


@pytest.fixture(scope="module")
def two_sshds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrivateSshd, PrivateSshd]]:
    need_root_sshd()
    base = tmp_path_factory.mktemp("sshd")
    started: list[PrivateSshd] = []
    try:
        started.append(start_sshd(base, "alpha"))
        started.append(start_sshd(base, "beta"))
        yield started[0], started[1]
    finally:
        for s in started:
            stop_sshd(s)
