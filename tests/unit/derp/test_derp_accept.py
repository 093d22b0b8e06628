"""The sans-IO server handshake: the upgrade request and the vector ClientInfo fed whole, a byte at a time and
with frames behind them; plain HTTP requests; and the exact errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshctl.derp.accept import Hello, Request, Send, ServerHandshake
from meshctl.derp.errors import DerpProtocolError, FrameTooLargeError, HandshakeError, HttpUpgradeError
from meshctl.derp.handshake import ClientInfo, encode_server_key, open_client_info
from meshctl.keys import DerpPrivateKey, NodePrivateKey

V = json.loads((Path(__file__).parents[2] / "vectors" / "derp" / "handshake.json").read_text())
SERVER = DerpPrivateKey(bytes.fromhex(V["server_private_hex"]))
CLIENT_PUB = NodePrivateKey(bytes.fromhex(V["client_private_hex"])).public_key()
UPGRADE = b"GET /derp HTTP/1.1\r\nHost: derp\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n"
CLIENT_INFO = bytes.fromhex(V["client_info_frame_hex"])
PING = bytes.fromhex("12000000080102030405060708")


def _hs() -> ServerHandshake:
    return ServerHandshake(SERVER.public_key().raw.hex(), encode_server_key(SERVER.public_key()),
                           lambda payload: open_client_info(SERVER, payload))


def _feed(hs: ServerHandshake, data: bytes, step: int) -> list[object]:
    events: list[object] = []
    for i in range(0, len(data), step):
        events += hs.receive(data[i:i + step])
    return events


def _check(events: list[object], rest: bytes) -> None:
    assert len(events) == 2
    upgrade, hello = events
    assert isinstance(upgrade, Send) and not upgrade.close
    assert upgrade.data.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert f"Derp-Public-Key: {V['server_public_hex']}\r\n".encode() in upgrade.data
    assert upgrade.data.endswith(encode_server_key(SERVER.public_key()))
    assert hello == Hello(CLIENT_PUB, ClientInfo(), rest)


@pytest.mark.parametrize("step", [1 << 20, 1, 7])
def test_upgrade_and_client_info(step: int) -> None:
    hs = _hs()
    _check(_feed(hs, UPGRADE + CLIENT_INFO, step), b"")
    assert hs.phase == ServerHandshake.DONE


def test_frames_right_behind_the_client_info_are_handed_on() -> None:
    trailing = PING + PING[:3]  # one whole frame and the start of the next
    _check(_hs().receive(UPGRADE + CLIENT_INFO + trailing), trailing)
    hs = _hs()  # the ClientInfo's last byte and the trailing bytes in one later chunk
    first = hs.receive(UPGRADE + CLIENT_INFO[:-1])
    _check(first + hs.receive(CLIENT_INFO[-1:] + trailing), trailing)


def test_fast_start_skips_the_101() -> None:
    events = _hs().receive(UPGRADE.replace(b"\r\n\r\n", b"\r\nDerp-Fast-Start: 1\r\n\r\n"))
    assert events == [Send(encode_server_key(SERVER.public_key()))]


def test_plain_requests_are_handed_to_the_shell() -> None:
    (ev,) = _hs().receive(b"GET /generate_204 HTTP/1.1\r\nX-Tailscale-Challenge: c1\r\n\r\n")
    assert isinstance(ev, Request) and ev.request.path == "/generate_204"


def test_derp_without_upgrade_is_426_and_close() -> None:
    (ev,) = _hs().receive(b"GET /derp HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(ev, Send) and ev.close
    assert ev.data.startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
    assert ev.data.endswith(b"DERP requires connection upgrade")


def test_websocket_derp_is_refused_with_400() -> None:
    (ev,) = _hs().receive(UPGRADE.replace(b"Upgrade: DERP", b"Upgrade: websocket"))
    assert isinstance(ev, Send) and ev.close and ev.data.startswith(b"HTTP/1.1 400 Bad Request\r\n")


def test_first_frame_must_be_client_info() -> None:
    hs = _hs()
    hs.receive(UPGRADE)
    with pytest.raises(DerpProtocolError) as exc:
        hs.receive(PING)
    assert str(exc.value) == "first DERP frame is type 0x12, want ClientInfo (0x02)"


def test_oversized_client_info_is_refused_from_its_header() -> None:
    hs = _hs()
    hs.receive(UPGRADE)
    with pytest.raises(FrameTooLargeError) as exc:
        hs.receive(b"\x02\x00\x04\x00\x01")  # 256 KiB + 1, header only
    assert str(exc.value) == "DERP frame type 0x02 announces 262145 bytes, limit is 262144"


def test_client_info_sealed_to_another_key() -> None:
    hs = ServerHandshake("00" * 32, b"", lambda p: open_client_info(DerpPrivateKey.generate(), p))
    hs.receive(UPGRADE)
    with pytest.raises(HandshakeError, match="box failed to open"):
        hs.receive(CLIENT_INFO)


def test_garbage_instead_of_http() -> None:
    with pytest.raises(HttpUpgradeError) as exc:
        _hs().receive(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n")
    assert exc.value.status == 400


def test_no_data_after_the_handover() -> None:
    hs = _hs()
    hs.receive(UPGRADE + CLIENT_INFO)
    with pytest.raises(DerpProtocolError, match="after the handshake"):
        hs.receive(PING)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_after_the_upgrade(data: bytes) -> None:
    hs = _hs()
    hs.receive(UPGRADE)
    try:
        hs.receive(data)
    except DerpProtocolError:
        pass


def test_head_without_an_end_is_refused_once_over_the_limit() -> None:
    hs = _hs()
    for _ in range(8192 // 64):
        assert hs.receive(b"X" * 64) == []
    with pytest.raises(HttpUpgradeError) as exc:
        hs.receive(b"X")
    assert exc.value.status == 431
