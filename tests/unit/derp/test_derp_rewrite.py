"""The relay's in-place SendPacket → RecvPacket rewrite (a pure function on a bytearray): byte-exact against the
codec for short runs (per frame) and long runs (strided slices), leaving bytes outside the run alone."""

from __future__ import annotations

import pytest

from meshctl.derp.conn import _rewrite
from meshctl.derp.frames import RecvPacket, SendPacket, encode_frame
from meshctl.keys import NodePublicKey

SRC = NodePublicKey(bytes(range(32)))
DST = NodePublicKey(b"\xee" * 32)


@pytest.mark.parametrize("n", [1, 7, 8, 45, 180])
@pytest.mark.parametrize("size", [0, 1, 1400])
def test_rewrite_matches_the_codec(n: int, size: int) -> None:
    packets = [bytes([i % 256]) * size for i in range(n)]
    frames = b"".join(encode_frame(SendPacket(DST, p)) for p in packets)
    before, after = b"\x99" * 3, encode_frame(SendPacket(DST, b"not part of the run"))
    buf = bytearray(before + frames + after)
    stride = 5 + 32 + size
    _rewrite(buf, len(before), len(before) + n * stride, stride, n, SRC.raw)
    assert bytes(buf) == before + b"".join(encode_frame(RecvPacket(SRC, p)) for p in packets) + after
