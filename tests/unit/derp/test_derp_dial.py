"""The sans-IO client handshake against the libsodium-built vectors: server messages fed whole, a byte at a
time and with frames behind them; every way a server can refuse or misbehave, with the exact error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshctl.derp.dial import ClientHandshake
from meshctl.derp.errors import (
    AdmissionDeniedError,
    BadMagicError,
    HandshakeError,
    HttpUpgradeError,
    ServerKeyMismatchError,
)
from meshctl.derp.frames import Health, KeepAlive, encode_frame
from meshctl.derp.handshake import ClientInfo, ServerInfo, encode_server_key, open_client_info
from meshctl.derp.http import upgrade_response
from meshctl.keys import DerpPrivateKey, NodePrivateKey

V = json.loads((Path(__file__).parents[2] / "vectors" / "derp" / "handshake.json").read_text())
CLIENT = NodePrivateKey(bytes.fromhex(V["client_private_hex"]))
SERVER = DerpPrivateKey(bytes.fromhex(V["server_private_hex"]))
HELLO = upgrade_response(V["server_public_hex"]) + encode_server_key(SERVER.public_key())
SERVER_INFO = bytes.fromhex(V["server_info_frame_hex"])
URL = "http://derp1:8443/derp"


def _hs(pinned: bool = False) -> ClientHandshake:
    return ClientHandshake(URL, "derp1:8443", "/derp", CLIENT, ClientInfo(),
                           pinned=SERVER.public_key() if pinned else None)


def _feed(hs: ClientHandshake, data: bytes, step: int) -> bytes:
    out = b""
    for i in range(0, len(data), step):
        out += hs.receive(data[i:i + step])
    return out


def test_start_is_the_upgrade_request() -> None:
    assert _hs().start() == (b"GET /derp HTTP/1.1\r\nHost: derp1:8443\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n"
                             b"User-Agent: meshctl-derp\r\n\r\n")


@pytest.mark.parametrize("step", [1 << 20, 1, 5])
@pytest.mark.parametrize("pinned", [False, True])
def test_full_handshake(step: int, pinned: bool) -> None:
    hs = _hs(pinned)
    out = _feed(hs, HELLO, step)
    assert out[:1] == b"\x02"  # ClientInfo, sealed to the server: it opens with the server's key
    assert open_client_info(SERVER, out[5:]) == (CLIENT.public_key(), ClientInfo())
    assert not hs.done
    assert _feed(hs, SERVER_INFO, step) == b""
    assert hs.done and hs.server_key == SERVER.public_key() and hs.server_info == ServerInfo()
    assert hs.rest == b""


def test_everything_in_one_chunk_with_frames_behind_server_info() -> None:
    hs = _hs()
    hs.receive(HELLO)
    trailing = encode_frame(KeepAlive()) + encode_frame(Health("x"))[:3]
    hs.receive(SERVER_INFO + trailing)
    assert hs.done and hs.rest == trailing


def test_health_then_close_is_an_admission_refusal_with_the_reason() -> None:
    hs = _hs()
    hs.receive(HELLO + encode_frame(Health("DERP server refused this client: node key not admitted")))
    with pytest.raises(AdmissionDeniedError) as exc:
        hs.eof()
    assert str(exc.value) == (f"DERP server {URL} closed the connection after ClientInfo: "
                              "DERP server refused this client: node key not admitted")
    assert exc.value.hint is not None and "registered" in exc.value.hint


@pytest.mark.parametrize(("fed", "error", "message"), [
    (b"", HttpUpgradeError, f"DERP server {URL} closed the connection during the HTTP upgrade"),
    (upgrade_response("00" * 32), HandshakeError, f"DERP server {URL} closed the connection before sending its key"),
])
def test_eof_in_each_phase(fed: bytes, error: type[Exception], message: str) -> None:
    hs = _hs()
    hs.receive(fed)
    with pytest.raises(error) as exc:
        hs.eof()
    assert str(exc.value) == message


def test_not_101() -> None:
    with pytest.raises(HttpUpgradeError) as exc:
        _hs().receive(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n")
    assert exc.value.status == 426
    assert str(exc.value) == f"DERP upgrade at {URL} got HTTP 426 Upgrade Required, want 101"


def test_pinned_key_mismatch_from_the_101_header() -> None:
    with pytest.raises(ServerKeyMismatchError) as exc:
        _hs(pinned=True).receive(upgrade_response("ab" * 32))
    assert exc.value.found == "nodekey:" + "ab" * 32


def test_pinned_key_mismatch_from_the_server_key_frame() -> None:
    other = DerpPrivateKey.generate().public_key()
    with pytest.raises(ServerKeyMismatchError):
        _hs(pinned=True).receive(b"HTTP/1.1 101 Switching Protocols\r\n\r\n" + encode_server_key(other))


def test_bad_magic() -> None:
    with pytest.raises(BadMagicError):
        _hs().receive(upgrade_response("00" * 32) + b"\x01\x00\x00\x00\x28" + b"NOTDERP!" + bytes(32))


def test_frames_out_of_order() -> None:
    with pytest.raises(HandshakeError, match=r"first DERP frame is type 0x06, want ServerKey \(0x01\)"):
        _hs().receive(upgrade_response("00" * 32) + encode_frame(KeepAlive()))
    hs = _hs()
    hs.receive(HELLO)
    with pytest.raises(HandshakeError, match="DERP frame type 0x06 before ServerInfo"):
        hs.receive(encode_frame(KeepAlive()))


def test_server_info_sealed_by_another_server() -> None:
    imposter = DerpPrivateKey.generate()
    hs = ClientHandshake(URL, "h", "/derp", CLIENT, ClientInfo())
    hs.receive(upgrade_response(imposter.public_key().raw.hex()) + encode_server_key(imposter.public_key()))
    with pytest.raises(HandshakeError, match=r"ServerInfo from .* box failed to open"):
        hs.receive(SERVER_INFO)  # sealed by the vector server, not by this one
