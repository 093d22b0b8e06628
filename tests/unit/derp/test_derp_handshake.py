"""DERP handshake: libsodium-built vectors (fixed keys and nonces), JSON field names, and the failures a
server must survive (box that does not open, wrong sizes, bad JSON, bad magic)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshctl.derp.errors import BadMagicError, DerpProtocolError, FrameFormatError, HandshakeError
from meshctl.derp.frames import MAGIC, FrameReader, FrameType
from meshctl.derp.handshake import (
    ClientInfo,
    ServerInfo,
    encode_server_key,
    mesh_key_matches,
    open_client_info,
    open_server_info,
    parse_mesh_key,
    parse_mesh_key_file,
    parse_server_key,
    seal_client_info,
    seal_server_info,
)
from meshctl.keys import DerpPrivateKey, KeyFormatError, NodePrivateKey, NodePublicKey

V = json.loads((Path(__file__).parents[2] / "vectors" / "derp" / "handshake.json").read_text())
CLIENT = NodePrivateKey(bytes.fromhex(V["client_private_hex"]))
SERVER = DerpPrivateKey(bytes.fromhex(V["server_private_hex"]))


def _payload(frame_hex: str, ftype: int) -> bytes:
    reader = FrameReader(limit=1 << 20)
    reader.feed(bytes.fromhex(frame_hex))
    (frame,) = reader.frames()
    assert frame.type == ftype
    return frame.payload


def test_vector_keys_match() -> None:
    assert CLIENT.public_key().raw.hex() == V["client_public_hex"]
    assert SERVER.public_key().raw.hex() == V["server_public_hex"]


def test_client_info_seal_matches_the_libsodium_vector() -> None:
    frame = seal_client_info(CLIENT, SERVER.public_key(), ClientInfo(),
                             nonce=bytes.fromhex(V["client_info_nonce_hex"]))
    assert frame.hex() == V["client_info_frame_hex"]


def test_client_info_json_uses_derper_field_names() -> None:
    assert ClientInfo().to_json().decode() == V["client_info_json"]
    assert ClientInfo(mesh_key=V["mesh_key"]).to_json().decode() == V["client_info_mesh_json"]


def test_server_opens_the_vector_client_info() -> None:
    key, info = open_client_info(SERVER, _payload(V["client_info_frame_hex"], FrameType.CLIENT_INFO))
    assert key == CLIENT.public_key()
    assert info == ClientInfo(version=2, mesh_key=None, can_ack_pings=True, is_prober=False, app_name="meshctl")


def test_server_opens_the_vector_mesh_client_info() -> None:
    _, info = open_client_info(SERVER, _payload(V["client_info_mesh_frame_hex"], FrameType.CLIENT_INFO))
    assert info.mesh_key == V["mesh_key"]
    assert V["mesh_key"] not in repr(info)  # the mesh key is a secret


def test_server_info_seal_and_open_match_the_vector() -> None:
    frame = seal_server_info(SERVER, CLIENT.public_key(), ServerInfo(), nonce=bytes.fromhex(V["server_info_nonce_hex"]))
    assert frame.hex() == V["server_info_frame_hex"]
    info = open_server_info(CLIENT, SERVER.public_key(), _payload(V["server_info_frame_hex"], FrameType.SERVER_INFO))
    assert info == ServerInfo(version=2)


def test_server_info_token_bucket_fields_round_trip() -> None:
    info = ServerInfo(token_bucket_bytes_per_second=1000, token_bucket_bytes_burst=5000)
    assert json.loads(info.to_json()) == {"version": 2, "TokenBucketBytesPerSecond": 1000,
                                          "TokenBucketBytesBurst": 5000}
    assert ServerInfo.from_json(info.to_json()) == info


def test_client_info_sealed_to_another_server_does_not_open() -> None:
    other = DerpPrivateKey.generate()
    frame = seal_client_info(CLIENT, other.public_key(), ClientInfo())
    with pytest.raises(HandshakeError, match=r"^ClientInfo from \[.{5}\]: box failed to open"):
        open_client_info(SERVER, frame[5:])


def test_tampered_client_info_does_not_open() -> None:
    payload = bytearray(_payload(V["client_info_frame_hex"], FrameType.CLIENT_INFO))
    payload[-1] ^= 1
    with pytest.raises(HandshakeError):
        open_client_info(SERVER, bytes(payload))


def test_client_info_too_short() -> None:
    with pytest.raises(FrameFormatError) as exc:
        open_client_info(SERVER, bytes(55))
    assert str(exc.value) == "DERP frame type 0x02: got 55 bytes, want at least 56"


def test_client_info_over_256k_is_refused() -> None:
    with pytest.raises(FrameFormatError, match="want at most 262144"):
        open_client_info(SERVER, bytes(256 * 1024 + 1))


@pytest.mark.parametrize(("plain", "message"), [
    (b"not json", "ClientInfo: box content is not JSON"),
    (b"[1,2]", "ClientInfo: want a JSON object, got list"),
    (b'{"version":"2"}', "ClientInfo version: want an integer, got str"),
])
def test_client_info_bad_json(plain: bytes, message: str) -> None:
    sealed = CLIENT.box(SERVER.public_key()).seal(plain)
    with pytest.raises(HandshakeError) as exc:
        open_client_info(SERVER, CLIENT.public_key().raw + sealed)
    assert str(exc.value) == message


def test_server_key_frame_layout() -> None:
    frame = encode_server_key(SERVER.public_key())
    assert frame[:5] == b"\x01\x00\x00\x00\x28"
    assert frame[5:13] == MAGIC == "DERP🔑".encode()
    assert parse_server_key(frame[5:]) == SERVER.public_key()


def test_server_key_with_wrong_magic() -> None:
    with pytest.raises(BadMagicError) as exc:
        parse_server_key(b"DERPXXXX" + bytes(32))
    assert str(exc.value) == "DERP ServerKey magic is 4445525058585858, want 44455250f09f9491 ('DERP🔑')"


def test_mesh_key_compare_and_parse() -> None:
    key = "ab" * 32
    assert mesh_key_matches(key, key)
    assert not mesh_key_matches("ab" * 31 + "ac", key)
    assert not mesh_key_matches(key, None)
    assert not mesh_key_matches(None, key)
    assert parse_mesh_key("  " + "AB" * 32 + "\n") == key
    with pytest.raises(KeyFormatError, match="want 64 hex characters, got 10"):
        parse_mesh_key("0123456789")
    with pytest.raises(KeyFormatError, match="hex digits"):
        parse_mesh_key("zz" * 32)


def test_client_public_key_is_a_node_key() -> None:
    key, _ = open_client_info(SERVER, _payload(V["client_info_frame_hex"], FrameType.CLIENT_INFO))
    assert isinstance(key, NodePublicKey)


def test_mesh_key_file_with_several_keys_for_rotation() -> None:
    old, new = "ab" * 32, "cd" * 32
    assert parse_mesh_key_file(f"{new}\n\n{old}\n") == [new, old]  # dial key first
    assert parse_mesh_key_file(f"{old}\n{old}\n") == [old]
    assert mesh_key_matches(old, [new, old]) and mesh_key_matches(new, [new, old])
    assert not mesh_key_matches("ef" * 32, [new, old])
    with pytest.raises(KeyFormatError, match="holds no key"):
        parse_mesh_key_file("\n  \n")
    with pytest.raises(KeyFormatError, match="want 64 hex characters"):
        parse_mesh_key_file(f"{old}\nshort\n")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_client_info_payloads_raise_only_protocol_errors(payload: bytes) -> None:
    try:
        open_client_info(SERVER, payload)
    except DerpProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_sealed_json_raises_only_handshake_errors(plain: bytes) -> None:
    sealed = CLIENT.box(SERVER.public_key()).seal(plain)
    try:
        open_client_info(SERVER, CLIENT.public_key().raw + sealed)
    except HandshakeError:
        pass
