"""DERP frame codec: hand-built vectors (parsed and re-encoded), fed whole / byte by byte / with trailing data,
edge cases with exact errors, and a bounded hypothesis fuzz of the reader and parser."""

from __future__ import annotations

import ipaddress
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshctl.derp.errors import DerpProtocolError, FrameFormatError, FrameTooLargeError, FrameTruncatedError
from meshctl.derp.frames import (
    MAX_PACKET_SIZE,
    ClosePeer,
    ForwardPacket,
    Frame,
    FrameReader,
    FrameType,
    Health,
    KeepAlive,
    NotePreferred,
    PeerGone,
    PeerGoneReason,
    PeerPresent,
    PeerPresentFlags,
    Ping,
    Pong,
    RecvPacket,
    Restarting,
    SendPacket,
    UnknownFrame,
    WatchConns,
    encode_frame,
    is_disco,
    parse_frame,
)
from meshctl.derp.handshake import parse_server_key
from meshctl.keys import DerpPublicKey, NodePublicKey

VECTORS = json.loads((Path(__file__).parents[2] / "vectors" / "derp" / "frames.json").read_text())


def _bytes(v: dict[str, Any]) -> bytes:
    return bytes.fromhex("".join(v["hex"]))


def _key(h: str) -> NodePublicKey:
    return NodePublicKey(bytes.fromhex(h))


def _expected(v: dict[str, Any]) -> Any:
    k = v["kind"]
    if k == "SendPacket":
        return SendPacket(_key(v["dst"]), bytes.fromhex(v["data"]))
    if k == "RecvPacket":
        return RecvPacket(_key(v["src"]), bytes.fromhex(v["data"]))
    if k == "ForwardPacket":
        return ForwardPacket(_key(v["src"]), _key(v["dst"]), bytes.fromhex(v["data"]))
    if k == "KeepAlive":
        return KeepAlive()
    if k == "NotePreferred":
        return NotePreferred(v["preferred"])
    if k == "PeerGone":
        return PeerGone(_key(v["key"]), PeerGoneReason(v["reason"]))
    if k == "PeerPresent":
        return PeerPresent(_key(v["key"]), ipaddress.ip_address(v["ip"]), v["port"], PeerPresentFlags(v["flags"]))
    if k == "WatchConns":
        return WatchConns()
    if k == "ClosePeer":
        return ClosePeer(_key(v["key"]))
    if k == "Ping":
        return Ping(bytes.fromhex(v["data"]))
    if k == "Pong":
        return Pong(bytes.fromhex(v["data"]))
    if k == "Health":
        return Health(v["text"])
    if k == "Restarting":
        return Restarting(v["reconnect_in_ms"], v["try_for_ms"])
    if k == "Unknown":
        return UnknownFrame(v["type"], bytes.fromhex(v["data"]))
    raise AssertionError(k)


MESSAGE_VECTORS = [v for v in VECTORS["vectors"] if v["kind"] != "ServerKey"]
IDS = [v["name"] for v in MESSAGE_VECTORS]


def _parse_all(reader: FrameReader) -> list[Any]:
    return [parse_frame(f.type, f.payload) for f in reader.frames()]


@pytest.mark.parametrize("vec", MESSAGE_VECTORS, ids=IDS)
def test_vector_parses_to_the_expected_message_and_encodes_back(vec: dict[str, Any]) -> None:
    raw = _bytes(vec)
    reader = FrameReader()
    reader.feed(raw)
    assert _parse_all(reader) == [_expected(vec)]
    assert encode_frame(_expected(vec)) == raw


@pytest.mark.parametrize("vec", MESSAGE_VECTORS, ids=IDS)
def test_vector_fed_one_byte_at_a_time(vec: dict[str, Any]) -> None:
    raw = _bytes(vec)
    reader = FrameReader()
    got: list[Any] = []
    for i in range(len(raw)):
        reader.feed(raw[i:i + 1])
        got += _parse_all(reader)
        if i < len(raw) - 1:
            assert got == [], "a frame must not come out before its last byte"
    assert got == [_expected(vec)]
    assert reader.buffered() == 0


@pytest.mark.parametrize("vec", MESSAGE_VECTORS, ids=IDS)
def test_vector_with_trailing_partial_frame_keeps_the_rest(vec: dict[str, Any]) -> None:
    raw = _bytes(vec)
    trailing = bytes.fromhex("0600")  # start of a KeepAlive header
    reader = FrameReader()
    reader.feed(raw + trailing)
    assert _parse_all(reader) == [_expected(vec)]
    assert reader.buffered() == 2
    reader.feed(bytes.fromhex("000000"))
    assert _parse_all(reader) == [KeepAlive()]


def test_all_vectors_back_to_back_in_one_chunk() -> None:
    raw = b"".join(_bytes(v) for v in MESSAGE_VECTORS)
    reader = FrameReader()
    reader.feed(raw)
    assert _parse_all(reader) == [_expected(v) for v in MESSAGE_VECTORS]


def test_server_key_vector() -> None:
    vec = next(v for v in VECTORS["vectors"] if v["kind"] == "ServerKey")
    reader = FrameReader()
    reader.feed(_bytes(vec))
    (frame,) = reader.frames()
    assert frame.type == FrameType.SERVER_KEY
    assert parse_server_key(frame.payload) == DerpPublicKey(bytes.fromhex(vec["key"]))
    # reserved trailing bytes in the ServerKey payload are ignored
    assert parse_server_key(frame.payload + b"\x00" * 10) == DerpPublicKey(bytes.fromhex(vec["key"]))


def test_peer_present_key_only_from_older_servers() -> None:
    raw = bytes.fromhex("".join(VECTORS["peer_present_key_only"]["hex"]))
    reader = FrameReader()
    reader.feed(raw)
    (msg,) = _parse_all(reader)
    assert msg == PeerPresent(NodePublicKey(b"\x44" * 32))


def test_oversized_length_is_refused_from_the_header_alone() -> None:
    reader = FrameReader(limit=MAX_PACKET_SIZE + 64)
    reader.feed(struct.pack(">BI", FrameType.SEND_PACKET, MAX_PACKET_SIZE + 65))  # header only, no body
    with pytest.raises(FrameTooLargeError) as exc:
        reader.frames()
    assert (exc.value.frame_type, exc.value.length, exc.value.limit) == (4, MAX_PACKET_SIZE + 65, MAX_PACKET_SIZE + 64)
    assert str(exc.value) == "DERP frame type 0x04 announces 65601 bytes, limit is 65600"
    with pytest.raises(FrameTooLargeError):  # poisoned: no further use
        reader.feed(b"\x06\x00\x00\x00\x00")


def test_max_uint32_length_is_refused() -> None:
    reader = FrameReader()
    reader.feed(b"\x04\xff\xff\xff\xff")
    with pytest.raises(FrameTooLargeError, match="announces 4294967295 bytes"):
        reader.frames()


def test_length_exactly_at_limit_is_accepted() -> None:
    reader = FrameReader(limit=40)
    reader.feed(struct.pack(">BI", 0x7F, 40) + bytes(40))
    assert reader.frames() == [Frame(0x7F, bytes(40))]


@pytest.mark.parametrize(("raw", "have", "want"), [
    (b"\x04\x00", 2, 5),
    (b"\x04\x00\x00\x00\x23" + b"\x22" * 10, 15, 40),
])
def test_truncated_stream_is_reported_at_eof(raw: bytes, have: int, want: int) -> None:
    reader = FrameReader()
    reader.feed(raw)
    assert reader.frames() == []
    with pytest.raises(FrameTruncatedError) as exc:
        reader.check_eof()
    assert (exc.value.have, exc.value.want) == (have, want)
    assert str(exc.value) == f"DERP stream ended inside a frame: have {have} bytes, want {want}"


@pytest.mark.parametrize(("ftype", "payload", "message"), [
    (FrameType.SEND_PACKET, b"\x01" * 31, "DERP frame type 0x04: got 31 bytes, want at least 32 (32-byte destination key)"),
    (FrameType.RECV_PACKET, b"", "DERP frame type 0x05: got 0 bytes, want at least 32 (32-byte source key)"),
    (FrameType.FORWARD_PACKET, b"\x01" * 63,
     "DERP frame type 0x0a: got 63 bytes, want at least 64 (32-byte source and destination keys)"),
    (FrameType.PING, b"\x01" * 7, "DERP frame type 0x12: got 7 bytes, want at least 8 (8-byte ping data)"),
    (FrameType.NOTE_PREFERRED, b"", "DERP frame type 0x07: got 0 bytes, want at least 1 (1 preferred byte)"),
    (FrameType.RESTARTING, b"\x00" * 7, "DERP frame type 0x15: got 7 bytes, want at least 8 (two 4-byte durations)"),
])
def test_short_payloads_name_what_was_wanted(ftype: int, payload: bytes, message: str) -> None:
    with pytest.raises(FrameFormatError) as exc:
        parse_frame(ftype, payload)
    assert str(exc.value) == message


def test_ping_longer_than_8_bytes_keeps_the_first_8() -> None:
    assert parse_frame(FrameType.PING, bytes(range(20))) == Ping(bytes(range(8)))


def test_disco_classification_by_magic() -> None:
    assert is_disco(b"TS\xf0\x9f\x92\xac" + b"rest")
    assert not is_disco(b"\x04\x00\x00\x00wireguard")


_keys = st.binary(min_size=32, max_size=32).map(NodePublicKey)
_data = st.binary(max_size=300)
_messages = st.one_of(
    st.builds(SendPacket, _keys, _data), st.builds(RecvPacket, _keys, _data),
    st.builds(ForwardPacket, _keys, _keys, _data), st.just(KeepAlive()), st.builds(NotePreferred, st.booleans()),
    st.builds(PeerGone, _keys, st.sampled_from([PeerGoneReason.DISCONNECTED, PeerGoneReason.NOT_HERE])),
    # IPv4-mapped IPv6 is the wire form of IPv4, so it parses back as IPv4: generate the canonical forms only
    st.builds(PeerPresent, _keys, st.ip_addresses().filter(lambda ip: getattr(ip, "ipv4_mapped", None) is None),
              st.integers(0, 65535),
              st.integers(0, 15).map(PeerPresentFlags)),
    st.just(WatchConns()), st.builds(ClosePeer, _keys), st.builds(Ping, st.binary(min_size=8, max_size=8)),
    st.builds(Pong, st.binary(min_size=8, max_size=8)), st.builds(Health, st.text(max_size=50)),
    st.builds(Restarting, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_messages, max_size=8), st.integers(1, 64))
def test_round_trip_any_message_sequence_in_any_chunking(msgs: list[Any], chunk: int) -> None:
    raw = b"".join(encode_frame(m) for m in msgs)
    reader = FrameReader()
    got: list[Any] = []
    for i in range(0, len(raw), chunk):
        reader.feed(raw[i:i + chunk])
        got += _parse_all(reader)
    assert got == msgs
    reader.check_eof()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.integers(0, 100_000))
def test_fuzz_reader_and_parser_raise_only_protocol_errors(data: bytes, limit: int) -> None:
    reader = FrameReader(limit=limit)
    try:
        reader.feed(data)
        for frame in reader.frames():
            assert len(frame.payload) <= limit
            parse_frame(frame.type, frame.payload)
        reader.check_eof()
    except DerpProtocolError:
        pass
    assert reader.buffered() <= max(len(data), 0)
