"""Sans-IO sealing and framing: every refusal code, the time window, replay memory, frame splitting."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshctl.control.errors import FrameError, SealError
from meshctl.control.sealing import FrameDecoder, RequestOpener, encode_frame, open_json, seal_json, seal_request
from meshctl.keys import ControlPrivateKey, MachinePrivateKey

CONTROL = ControlPrivateKey.generate()
MACHINE = MachinePrivateKey.generate()
NOW = 1_800_000_000.0


def sealed(payload: dict[str, object] | None = None, now: float = NOW) -> tuple[str, bytes]:
    headers, body = seal_request(MACHINE, CONTROL.public_key(), payload or {"x": 1}, now)
    return headers["Meshctl-Machine"], body


def code_of(opener: RequestOpener, header: str | None, body: bytes, now: float = NOW) -> str:
    with pytest.raises(SealError) as info:
        opener.open(header, body, now)
    return info.value.code


def test_open_round_trip_and_reply_box() -> None:
    opener = RequestOpener(CONTROL)
    header, body = sealed({"nodeKey": "k"})
    opened = opener.open(header, body, NOW)
    assert opened.machine_key == MACHINE.public_key() and opened.payload == {"nodeKey": "k", "time": NOW}
    reply = seal_json(opened.box, {"ok": True})
    assert open_json(MACHINE.box(CONTROL.public_key()), reply, "reply") == {"ok": True}


def test_refusal_codes() -> None:
    opener = RequestOpener(CONTROL, max_body=1000)
    header, body = sealed()
    assert code_of(opener, None, body) == "missing_machine_header"
    assert code_of(opener, "mkey:zz", body) == "bad_machine_header"
    assert code_of(opener, MachinePrivateKey.generate().public_key().to_text(), body) == "bad_box"
    assert code_of(opener, header, b"\0" * 1001) == "body_too_large"
    assert code_of(opener, header, body[:-1] + bytes([body[-1] ^ 1])) == "bad_box"
    box = MACHINE.box(CONTROL.public_key())
    assert code_of(opener, header, box.seal(b"\xff\xfe")) == "bad_json"
    assert code_of(opener, header, box.seal(b"[1, 2]")) == "bad_json"
    assert code_of(opener, header, box.seal(json.dumps({"time": "now"}).encode())) == "bad_time"
    assert code_of(opener, header, box.seal(json.dumps({"time": True}).encode())) == "bad_time"
    assert code_of(opener, header, box.seal(b"{\"time\": NaN}")) == "bad_time"  # Python json accepts NaN
    assert code_of(opener, header, box.seal(b"{\"time\": Infinity}")) == "bad_time"


def test_sealed_to_another_control_key() -> None:
    other = RequestOpener(ControlPrivateKey.generate())
    header, body = sealed()
    assert code_of(other, header, body) == "bad_box"


@pytest.mark.parametrize("skew", [-121.0, 121.0, -10_000.0])
def test_time_outside_window(skew: float) -> None:
    opener = RequestOpener(CONTROL)
    header, body = sealed(now=NOW + skew)
    assert code_of(opener, header, body) == "stale_time"


@pytest.mark.parametrize("skew", [-119.0, 0.0, 119.0])
def test_time_inside_window(skew: float) -> None:
    header, body = sealed(now=NOW + skew)
    RequestOpener(CONTROL).open(header, body, NOW)


def test_replay_is_rejected_inside_window_and_memory_is_bounded() -> None:
    opener = RequestOpener(CONTROL)
    header, body = sealed()
    opener.open(header, body, NOW)
    assert code_of(opener, header, body, NOW + 60) == "replayed"
    # once the window has passed, the request is stale anyway, and its nonce may be forgotten
    assert code_of(opener, header, body, NOW + 500) == "stale_time"
    assert len(opener._seen) == 0


def test_refused_request_does_not_burn_its_nonce() -> None:
    opener = RequestOpener(CONTROL)
    header, body = sealed(now=NOW)
    assert code_of(opener, header, body, NOW + 200) == "stale_time"
    opener.open(header, body, NOW)  # the same bytes are fine inside the window


def frame(obj: object) -> bytes:
    return encode_frame(json.dumps(obj).encode())


def test_frame_decoder_whole_bytewise_and_trailing() -> None:
    data = frame({"a": 1}) + frame({"b": 2})
    assert FrameDecoder().feed(data) == [b'{"a": 1}', b'{"b": 2}']
    dec = FrameDecoder()
    out = []
    for i in range(len(data)):
        out += dec.feed(data[i:i + 1])
    assert out == [b'{"a": 1}', b'{"b": 2}']
    dec = FrameDecoder()
    assert dec.feed(data + b"\x05\x00") == [b'{"a": 1}', b'{"b": 2}'] and dec.pending == 2


def test_frame_length_is_little_endian() -> None:
    assert encode_frame(b"xyz")[:4] == b"\x03\x00\x00\x00"


def test_oversized_frame() -> None:
    with pytest.raises(FrameError, match="map frame of 1025 bytes exceeds the 1024-byte limit"):
        FrameDecoder(max_frame=1024).feed(struct.pack("<I", 1025))


@given(st.lists(st.binary(max_size=300), max_size=8), st.lists(st.integers(1, 50), min_size=1, max_size=20))
def test_frame_decoder_any_chunking(payloads: list[bytes], cuts: list[int]) -> None:
    data = b"".join(encode_frame(p) for p in payloads)
    dec = FrameDecoder()
    out: list[bytes] = []
    pos, i = 0, 0
    while pos < len(data):
        step = cuts[i % len(cuts)]
        out += dec.feed(data[pos:pos + step])
        pos += step
        i += 1
    assert out == payloads and dec.pending == 0
