"""Deploy-key rotation against two real sshd servers: add → verify → switch → remove; abort without lock-out."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from meshctl.rotate.deploykey import created_comment, public_line_of, rotate_deploy_key
from meshctl.rotate.errors import RotationAbortedError
from meshctl.rotate.sshexec import SshRunner, targets_from_inventory
from meshctl.workspace import create_workspace

from .conftest import PrivateSshd

pytestmark = [pytest.mark.integration, pytest.mark.root]

OTHER = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHs0m3bcO9wCVZ2RPGnSJkFXhnq0Y1xP0g2nB1ppV7X1 operator@laptop"


def _setup(tmp_path: Path, a: PrivateSshd, b: PrivateSshd, *, b_keys: Path | None = None,
           extra_host: str = "") -> tuple[Path, Path]:
    ws = create_workspace(tmp_path / "ws", name="t")
    old = public_line_of(ws.deploy_key)
    for s in (a, b):
        s.authorized_keys.write_text(f'from="127.0.0.1" {OTHER}\n{old} meshctl-deploy@t\n')
    os.chmod(a.authorized_keys, 0o640)  # an unusual mode must survive the edit
    known = tmp_path / "known_hosts"
    known.write_text(f"{a.known_hosts_line}\n{b.known_hosts_line}\n")
    inv = tmp_path / "inventory.py"
    b_file = b_keys or b.authorized_keys
    inv.write_text(
        f"_c = {{'ssh_hostname': '127.0.0.1', 'ssh_known_hosts_file': {str(known)!r}}}\n"
        f"control = [('alpha', dict(_c, ssh_port={a.port}, authorized_keys_file={str(a.authorized_keys)!r}))]\n"
        f"nodes = [('beta', dict(_c, ssh_port={b.port}, authorized_keys_file={str(b_file)!r})){extra_host}]\n"
    )
    return ws.deploy_key, inv


def _login(s: PrivateSshd, key: Path, known: Path) -> int:
    return subprocess.run(
        ["ssh", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes", "-p", str(s.port),
         "root@127.0.0.1", "true"], capture_output=True, timeout=30).returncode


def test_rotation_switches_every_host_and_the_workspace(two_sshds: tuple[PrivateSshd, PrivateSshd],
                                                        tmp_path: Path) -> None:
    a, b = two_sshds
    key, inv = _setup(tmp_path, a, b)
    old_copy = tmp_path / "old_key"
    old_copy.write_bytes(key.read_bytes())
    os.chmod(old_copy, 0o600)
    old_public = public_line_of(key)
    steps: list[tuple[str, str, str]] = []
    result = rotate_deploy_key(targets_from_inventory(inv), key, runner=SshRunner(),
                               comment=created_comment("t", 1.8e9), progress=lambda *e: steps.append(e))

    assert result.complete and result.old_public == old_public
    new_public = public_line_of(key)
    assert new_public == result.new_public != old_public
    assert not key.with_name(key.name + ".old").exists() and not key.with_name(key.name + ".new").exists()
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert "created=20270115T080000Z" in key.with_name(key.name + ".pub").read_text()
    known = tmp_path / "known_hosts"
    for s in (a, b):
        text = s.authorized_keys.read_text()
        assert new_public.split()[1] in text
        assert old_public.split()[1] not in text
        assert OTHER in text  # other people's keys are left alone
        assert _login(s, key, known) == 0
        assert _login(s, old_copy, known) != 0
    assert stat.S_IMODE(os.stat(a.authorized_keys).st_mode) == 0o640
    # the order that keeps the operator safe: every add and verify happened before any removal
    order = [step for _, step, _ in steps]
    assert max(i for i, s in enumerate(order) if s == "login with new key") < order.index("remove old key")


def test_host_rejecting_new_key_stops_before_removing_anything(two_sshds: tuple[PrivateSshd, PrivateSshd],
                                                               tmp_path: Path) -> None:
    a, b = two_sshds
    # beta's sshd reads another file than the one the inventory says: the new key never becomes valid there
    ignored = b.dir / "ignored_keys"
    key, inv = _setup(tmp_path, a, b, b_keys=ignored)
    old_public = public_line_of(key)
    before = key.read_bytes()
    with pytest.raises(RotationAbortedError) as info:
        rotate_deploy_key(targets_from_inventory(inv), key, runner=SshRunner(), comment="x")
    assert set(info.value.failed) == {"beta"}
    assert "beta" in str(info.value) and "stopped before removing anything" in str(info.value)
    assert key.read_bytes() == before  # the workspace still holds the old key
    assert not key.with_name(key.name + ".new").exists()
    known = tmp_path / "known_hosts"
    for s in (a, b):
        assert old_public.split()[1] in s.authorized_keys.read_text()
        assert _login(s, key, known) == 0
    assert len(a.authorized_keys.read_text().splitlines()) == 2  # the new line was rolled back on alpha
    assert ignored.read_text() == ""
    ignored.unlink()


def test_unreachable_host_fails_preflight_and_changes_nothing(two_sshds: tuple[PrivateSshd, PrivateSshd],
                                                              tmp_path: Path) -> None:
    a, b = two_sshds
    key, inv = _setup(tmp_path, a, b, extra_host=", ('gamma', dict(_c, ssh_port=1))")
    before = {s.name: s.authorized_keys.read_text() for s in (a, b)}
    with pytest.raises(RotationAbortedError, match="gamma"):
        rotate_deploy_key(targets_from_inventory(inv), key, runner=SshRunner(), comment="x")
    assert {s.name: s.authorized_keys.read_text() for s in (a, b)} == before
    assert not key.with_name(key.name + ".new").exists()


def test_rerun_after_a_crash_past_the_switch_finishes_the_removal(two_sshds: tuple[PrivateSshd, PrivateSshd],
                                                                  tmp_path: Path) -> None:
    from meshctl.workspace import generate_ssh_keypair

    a, b = two_sshds
    key, inv = _setup(tmp_path, a, b)
    # the state a crash right after the switch leaves: both keys on every host, KEY = new, KEY.old = old
    old_public = public_line_of(key)
    old_path = key.with_name(key.name + ".old")
    os.replace(key, old_path)
    os.replace(key.with_name(key.name + ".pub"), old_path.with_name(old_path.name + ".pub"))
    new_line = generate_ssh_keypair(key, "meshctl-deploy@t")
    for s in (a, b):
        s.authorized_keys.write_text(s.authorized_keys.read_text() + new_line + "\n")
    result = rotate_deploy_key(targets_from_inventory(inv), key, runner=SshRunner(), comment="x")
    assert result.resumed and result.complete
    assert result.new_public == " ".join(new_line.split()[:2]) and result.old_public == old_public
    assert not old_path.exists()
    for s in (a, b):
        text = s.authorized_keys.read_text()
        assert old_public.split()[1] not in text and new_line.split()[1] in text and OTHER in text
        assert _login(s, key, tmp_path / "known_hosts") == 0
