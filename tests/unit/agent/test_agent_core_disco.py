"""Disco codec: hand-built byte vectors, round trips, malformed input and a parse→marshal→parse fuzz."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshctl.agent.disco import (
    MAGIC,
    CallMeMaybe,
    Endpoint,
    Ping,
    Pong,
    encode_message,
    is_disco,
    open_packet,
    parse_message,
    seal_packet,
    sender_of,
)
from meshctl.agent.errors import DiscoError
from meshctl.keys import DiscoPrivateKey, NodePrivateKey, NodePublicKey

TX = bytes(range(1, 13))
NODE = NodePublicKey(bytes(range(32)))

# hand-built vectors: type, version 0, payload (tailscale disco/disco.go layout)
VECTORS = [
    (Ping(TX), "0100" + TX.hex()),
    (Ping(TX, NODE), "0100" + TX.hex() + bytes(range(32)).hex()),
    (Pong(TX, Endpoint("2.3.4.5", 1234)), "0200" + TX.hex() + "00000000000000000000ffff02030405" + "04d2"),
    (Pong(TX, Endpoint("fd7a:115c:a1e0::1", 41642)), "0200" + TX.hex() + "fd7a115ca1e000000000000000000001" + "a2aa"),
    (CallMeMaybe(()), "0300"),
    (CallMeMaybe((Endpoint("1.2.3.4", 41641), Endpoint("::1", 2))),
     "0300" + "00000000000000000000ffff01020304a2a9" + "00000000000000000000000000000001" + "0002"),
]


def test_magic_is_ts_speech_balloon() -> None:
    assert bytes.fromhex("5453f09f92ac") == MAGIC


@pytest.mark.parametrize(("msg", "hexbytes"), VECTORS)
def test_vectors_encode_and_parse(msg: object, hexbytes: str) -> None:
    raw = bytes.fromhex(hexbytes)
    assert encode_message(msg) == raw  # type: ignore[arg-type]
    assert parse_message(raw) == msg


@pytest.mark.parametrize(("msg", "hexbytes"), VECTORS[:4])
def test_ping_and_pong_ignore_trailing_bytes(msg: object, hexbytes: str) -> None:
    # a Ping with 12..43 payload bytes carries no node key; trailing data after fixed fields is ignored
    raw = bytes.fromhex(hexbytes)
    if isinstance(msg, Ping) and msg.node_key is None:
        assert parse_message(raw + b"\x00" * 5) == msg
    else:
        assert parse_message(raw + b"extra") == msg


@pytest.mark.parametrize(("raw", "message"), [
    (b"", "disco message too short: 0 bytes, want at least 2 (type, version)"),
    (b"\x01", "disco message too short: 1 bytes, want at least 2 (type, version)"),
    (b"\x01\x00" + b"x" * 11, "disco ping too short: 11 payload bytes, want at least 12"),
    (b"\x02\x00" + b"x" * 29, "disco pong too short: 29 payload bytes, want at least 30"),
    (b"\x03\x00" + b"x" * 17, "disco call-me-maybe: 17 payload bytes is not a multiple of 18"),
    (b"\x09\x00", "unknown disco message type 0x09, want 0x01 ping, 0x02 pong or 0x03 call-me-maybe"),
])
def test_malformed_messages(raw: bytes, message: str) -> None:
    with pytest.raises(DiscoError) as err:
        parse_message(raw)
    assert str(err.value) == message


def test_sealed_packet_round_trip_and_header() -> None:
    a, b = DiscoPrivateKey.generate(), DiscoPrivateKey.generate()
    nonce = b"\x07" * 24
    pkt = seal_packet(a, b.public_key(), Ping(TX, NODE), nonce)
    assert pkt[:6] == MAGIC
    assert pkt[6:38] == a.public_key().raw
    assert pkt[38:62] == nonce
    assert len(pkt) == 6 + 32 + 24 + 16 + 2 + 12 + 32
    assert is_disco(pkt)
    assert sender_of(pkt) == a.public_key()
    assert open_packet(b, pkt) == (a.public_key(), Ping(TX, NODE))


def test_packet_for_someone_else_or_tampered_does_not_open() -> None:
    a, b, c = DiscoPrivateKey.generate(), DiscoPrivateKey.generate(), DiscoPrivateKey.generate()
    pkt = seal_packet(a, b.public_key(), Pong(TX, Endpoint("10.0.0.1", 5)))
    with pytest.raises(DiscoError, match="did not open: not sealed to our disco key"):
        open_packet(c, pkt)
    tampered = pkt[:-1] + bytes([pkt[-1] ^ 1])
    with pytest.raises(DiscoError, match="did not open"):
        open_packet(b, tampered)
    # a forged sender key in the clear header fails authentication too
    forged = pkt[:6] + c.public_key().raw + pkt[38:]
    with pytest.raises(DiscoError, match="did not open"):
        open_packet(b, forged)


@pytest.mark.parametrize("pkt", [b"", MAGIC, MAGIC + b"\x00" * 71, b"XXXXXX" + b"\x00" * 100])
def test_not_disco(pkt: bytes) -> None:
    assert not is_disco(pkt)
    with pytest.raises(DiscoError, match="not a disco packet"):
        sender_of(pkt)


def test_wireguard_packets_are_not_disco() -> None:
    # WireGuard message types 1..4 start with a type byte and three zero bytes
    for t in range(1, 5):
        assert not is_disco(bytes([t, 0, 0, 0]) + b"\x00" * 144)


def test_endpoint_text_forms() -> None:
    assert str(Endpoint.parse("1.2.3.4:41641")) == "1.2.3.4:41641"
    assert Endpoint.parse("[fd7a::1]:9") == Endpoint("fd7a::1", 9)
    assert str(Endpoint("fd7a::1", 9)) == "[fd7a::1]:9"
    with pytest.raises(ValueError, match="want ip:port"):
        Endpoint.parse("1.2.3.4")
    with pytest.raises(ValueError, match="port out of range"):
        Endpoint("1.2.3.4", 70000)


@given(st.binary(max_size=200))
def test_fuzz_parse_marshal_parse(raw: bytes) -> None:
    try:
        msg = parse_message(raw)
    except DiscoError:
        return
    assert parse_message(encode_message(msg)) == msg


_ip = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)
_ep = st.builds(Endpoint, _ip, st.integers(0, 65535))
_msg = st.one_of(
    st.builds(Ping, st.binary(min_size=12, max_size=12),
              st.none() | st.just(NodePrivateKey.generate().public_key())),
    st.builds(Pong, st.binary(min_size=12, max_size=12), _ep),
    st.builds(CallMeMaybe, st.lists(_ep, max_size=5).map(tuple)),
)


@given(_msg)
def test_every_message_round_trips(msg: Ping | Pong | CallMeMaybe) -> None:
    assert parse_message(encode_message(msg)) == msg


@given(st.binary(max_size=120))
def test_open_packet_on_garbage_raises_only_disco_error(garbage: bytes) -> None:
    me = DiscoPrivateKey.generate()
    with pytest.raises(DiscoError):
        open_packet(me, MAGIC + garbage)
