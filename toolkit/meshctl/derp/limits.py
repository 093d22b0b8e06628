"""Pure building blocks for the relay's bounded behaviour: a token bucket and the per-client send queue.

`SendQueue` holds frames for a client whose socket cannot take more right now: two deques (disco and
data, derper's split) of at most `depth` frames each; when one is full the oldest frame is dropped
(head drop keeps queueing delay low). No I/O, no clock: `now` is passed in.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["QUEUE_DEPTH", "SendQueue", "TokenBucket"]

QUEUE_DEPTH = 32


@dataclass(slots=True)
class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; `allow(now)` takes one if available."""

    rate: float
    burst: float
    tokens: float = -1.0
    last: float | None = None

    def allow(self, now: float) -> bool:
        if self.last is None:
            self.tokens = self.burst
        else:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(slots=True)
class SendQueue:
    """Bounded queues of encoded frames; `push` returns how many frames it had to drop (0 or 1)."""

    depth: int = QUEUE_DEPTH
    data: deque[bytes] = field(default_factory=deque)
    disco: deque[bytes] = field(default_factory=deque)

    def push(self, frame: bytes, *, disco: bool = False) -> int:
        q = self.disco if disco else self.data
        dropped = 0
        if len(q) >= self.depth:
            q.popleft()
            dropped = 1
        q.append(frame)
        return dropped

    def drain(self) -> list[bytes]:
        """Everything queued, disco first (it is small and latency-sensitive), and empty the queues."""
        out = list(self.disco) + list(self.data)
        self.disco.clear()
        self.data.clear()
        return out

    def __len__(self) -> int:
        return len(self.data) + len(self.disco)
