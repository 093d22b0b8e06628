"""The authorized_keys edit script, run by the local `sh` on temporary files."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from meshctl.rotate.authkeys import count_script, edit_script, key_blob

A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHs0m3bcO9wCVZ2RPGnSJkFXhnq0Y1xP0g2nB1ppV7X1 a@x"
B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAyOAXtKbF0mkG6J7H4L8gUcUR7NdgBmzH16d9qW1rH4 b@y"


def _sh(script: str) -> str:
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout.strip()


def test_add_creates_missing_file_private(tmp_path: Path) -> None:
    f = tmp_path / "ssh" / "authorized_keys"
    assert _sh(edit_script(str(f), add=A)) == "changed"
    assert f.read_text() == A + "\n"
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(f.parent).st_mode) == 0o700


def test_add_is_idempotent_by_key_blob(tmp_path: Path) -> None:
    f = tmp_path / "authorized_keys"
    f.write_text(f'command="x" {A.rsplit(" ", 1)[0]} other-comment\n')
    assert _sh(edit_script(str(f), add=A)) == "unchanged"
    assert _sh(count_script(str(f), A)) == "1"


def test_remove_drops_every_line_with_the_key_and_keeps_others(tmp_path: Path) -> None:
    f = tmp_path / "authorized_keys"
    f.write_text(f'# comment\nfrom="10.0.0.1" {A}\n{B}\n{A}\n')
    os.chmod(f, 0o644)
    assert _sh(edit_script(str(f), remove=A)) == "changed"
    assert f.read_text() == f"# comment\n{B}\n"
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o644
    assert _sh(count_script(str(f), A)) == "0"
    assert not [p for p in tmp_path.iterdir() if ".meshctl." in p.name]  # no temporary file left behind


def test_edit_follows_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real_keys"
    real.write_text(B + "\n")
    link = tmp_path / "authorized_keys"
    link.symlink_to(real)
    assert _sh(edit_script(str(link), add=A)) == "changed"
    assert link.is_symlink() and real.read_text() == f"{B}\n{A}\n"


def test_key_blob_refuses_junk() -> None:
    assert key_blob(A) == A.split()[1]
    with pytest.raises(ValueError):
        key_blob("hello")
    with pytest.raises(ValueError):
        edit_script("/x")
