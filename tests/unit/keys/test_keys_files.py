"""Key files and tokens: 0600 atomic writes, unsafe modes refused with the fix, derper JSON, hashed tokens."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from meshctl.keys import (
    DerpPrivateKey,
    KeyFileError,
    KeyFileModeError,
    KeyFormatError,
    KeyTypeMismatchError,
    MachinePrivateKey,
    NodePrivateKey,
    detect_private_key,
    generate_token,
    load_or_create_private_key,
    load_private_key,
    parse_token,
    verify_secret,
    write_private_key,
)


def mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_write_is_0600_in_a_new_0700_directory(tmp_path: Path) -> None:
    path = tmp_path / "state" / "agent" / "machine.key"
    key = MachinePrivateKey.generate()
    write_private_key(path, key)
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700 and mode(path.parent.parent) == 0o700
    assert path.read_text() == key.to_text() + "\n"
    assert load_private_key(path, MachinePrivateKey) == key
    # no temporary files left behind
    assert os.listdir(path.parent) == ["machine.key"]


def test_rewrite_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    write_private_key(path, NodePrivateKey.generate())
    new = NodePrivateKey.generate()
    write_private_key(path, new)
    assert load_private_key(path, NodePrivateKey) == new
    assert sorted(os.listdir(tmp_path)) == ["node.key"]


@pytest.mark.parametrize("bad_mode", [0o644, 0o640, 0o604, 0o660])
def test_load_refuses_group_or_world_readable(tmp_path: Path, bad_mode: int) -> None:
    path = tmp_path / "node.key"
    write_private_key(path, NodePrivateKey.generate())
    os.chmod(path, bad_mode)
    with pytest.raises(KeyFileModeError) as ei:
        load_private_key(path, NodePrivateKey)
    assert f"mode {bad_mode:04o}" in str(ei.value)
    assert ei.value.hint == f"fix it with: chmod 600 {path}"


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.key"
    with pytest.raises(KeyFileError, match="does not exist"):
        load_private_key(missing, NodePrivateKey)
    path = tmp_path / "m.key"
    write_private_key(path, MachinePrivateKey.generate())
    with pytest.raises(KeyTypeMismatchError, match=rf"{path}: node private key: expected 'privkey:' prefix"):
        load_private_key(path, NodePrivateKey)
    garbage = tmp_path / "g.key"
    garbage.write_bytes(b"privkey:xyz\n")
    os.chmod(garbage, 0o600)
    with pytest.raises(KeyFormatError, match=str(garbage)):
        load_private_key(garbage, NodePrivateKey)


def test_derp_key_file_uses_derper_json_shape(tmp_path: Path) -> None:
    path = tmp_path / "derp.key"
    key = DerpPrivateKey.generate()
    write_private_key(path, key)
    data = json.loads(path.read_text())
    assert data == {"PrivateKey": key.to_text()}
    assert data["PrivateKey"].startswith("privkey:")
    assert load_private_key(path, DerpPrivateKey) == key
    assert detect_private_key(path)[0] == "derp"
    with pytest.raises(KeyTypeMismatchError, match="holds a DERP server key"):
        load_private_key(path, NodePrivateKey)


def test_load_or_create_keeps_an_existing_key(tmp_path: Path) -> None:
    path = tmp_path / "machine.key"
    first, created = load_or_create_private_key(path, MachinePrivateKey)
    assert created
    again, created_again = load_or_create_private_key(path, MachinePrivateKey)
    assert not created_again and again == first


def test_tokens_are_stored_as_hashes_and_checked() -> None:
    tok = generate_token("auth")
    assert tok.text.startswith(f"mskey-auth-{tok.id}-")
    assert tok.text not in repr(tok)
    token_id, secret = parse_token(tok.text, "auth")
    assert token_id == tok.id
    assert secret not in tok.secret_hash
    assert verify_secret(secret, tok.secret_hash)
    assert not verify_secret(secret[:-1] + ("0" if secret[-1] != "0" else "1"), tok.secret_hash)
    assert generate_token("auth").text != tok.text
    with pytest.raises(KeyFormatError, match=r"wrong kind of key: want an api key"):
        parse_token(tok.text, "api")
    with pytest.raises(KeyFormatError, match="malformed auth key"):
        parse_token("mskey-auth-short", "auth")
