"""A full disk while writing a key file: one clear error, the old key intact, no temporary file left."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshctl.keys import KeyFileError, NodePrivateKey, load_private_key, write_private_key

pytestmark = [pytest.mark.integration, pytest.mark.root]


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (CI runs as root)")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_full_disk_keeps_the_old_key(tiny_fs: Path) -> None:
    path = tiny_fs / "state" / "node.key"
    old = NodePrivateKey.generate()
    write_private_key(path, old)
    fd = os.open(tiny_fs / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass  # ENOSPC: the disk is full now
    finally:
        os.close(fd)
    with pytest.raises(KeyFileError, match=r"cannot write .*node\.key: No space left on device"):
        write_private_key(path, NodePrivateKey.generate())
    assert load_private_key(path, NodePrivateKey) == old
    assert sorted(os.listdir(path.parent)) == ["node.key"]
