"""Bounded send queue (head drop, separate disco queue) and the token bucket behind PeerGone rate limits."""

from __future__ import annotations

from meshctl.derp.limits import QUEUE_DEPTH, SendQueue, TokenBucket


def test_queue_drops_oldest_when_full() -> None:
    q = SendQueue()
    dropped = sum(q.push(bytes([i])) for i in range(QUEUE_DEPTH + 5))
    assert dropped == 5
    assert len(q) == QUEUE_DEPTH
    out = q.drain()
    assert out[0] == bytes([5]) and out[-1] == bytes([QUEUE_DEPTH + 4])
    assert len(q) == 0


def test_disco_has_its_own_queue_and_goes_first() -> None:
    q = SendQueue(depth=2)
    for i in range(3):
        q.push(b"data%d" % i)
    assert q.push(b"disco", disco=True) == 0  # a full data queue does not push out disco
    assert q.drain() == [b"disco", b"data1", b"data2"]


def test_token_bucket_burst_then_rate() -> None:
    tb = TokenBucket(rate=1.0, burst=3.0)
    assert [tb.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert not tb.allow(0.5)
    assert tb.allow(1.6)
    assert not tb.allow(1.7)
    assert [tb.allow(100.0) for _ in range(4)] == [True, True, True, False]
