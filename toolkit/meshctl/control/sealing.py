"""Sans-IO sealing and framing of the node protocol (DESIGN §3): no sockets, no clock — `now` comes in.

Requests: header `Meshctl-Machine: mkey:<hex>`, body `nonce(24) ‖ box(json, control_pub,
machine_priv)`; the JSON carries `time` (unix seconds). The server (RequestOpener) rejects a body
that does not open, a `time` outside ±120 s, and a nonce it has already seen inside that window.
Responses are sealed the other way (control_priv → machine_pub). The map stream is a sequence of
frames `uint32 little-endian length ‖ nonce ‖ box(json MapResponse)`.
"""

from __future__ import annotations

import json
import math
import struct
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from ..keys import Box, BoxOpenError, ControlPrivateKey, ControlPublicKey, MachinePrivateKey, MachinePublicKey
from ..keys.errors import KeysError
from .errors import FrameError, SealError

__all__ = [
    "MACHINE_HEADER",
    "MAX_FRAME",
    "MAX_REQUEST_BODY",
    "TIME_WINDOW",
    "FrameDecoder",
    "OpenedRequest",
    "RequestOpener",
    "encode_frame",
    "open_json",
    "seal_json",
    "seal_request",
]

MACHINE_HEADER = "Meshctl-Machine"
TIME_WINDOW = 120.0
MAX_REQUEST_BODY = 64 * 1024
MAX_FRAME = 32 * 1024 * 1024
_LEN = struct.Struct("<I")


def seal_json(box: Box, obj: Any) -> bytes:
    """Seal a JSON-able object, or bytes that are already JSON text."""
    data = obj if isinstance(obj, bytes) else json.dumps(obj, separators=(",", ":")).encode()
    return box.seal(data)


def open_json(box: Box, sealed: bytes, what: str) -> Any:
    try:
        plain = box.open(sealed)
    except BoxOpenError:
        raise SealError(f"{what} does not open with the expected keys", "bad_box") from None
    try:
        return json.loads(plain)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SealError(f"{what} is not valid JSON inside its box: {err}", "bad_json") from None


def seal_request(machine: MachinePrivateKey, control: ControlPublicKey, payload: dict[str, Any], now: float,
                 box: Box | None = None) -> tuple[dict[str, str], bytes]:
    """Headers and body of a sealed node request. `box` may be a cached machine_priv→control_pub box."""
    box = box or machine.box(control)
    return {MACHINE_HEADER: machine.public_key().to_text()}, seal_json(box, {**payload, "time": now})


@dataclass(frozen=True, slots=True)
class OpenedRequest:
    machine_key: MachinePublicKey
    payload: dict[str, Any]
    box: Box  # control_priv ↔ machine_pub, for sealing the reply


class RequestOpener:
    """Server side: authenticates sealed requests and remembers nonces for the time window."""

    def __init__(self, control: ControlPrivateKey, *, window: float = TIME_WINDOW,
                 max_body: int = MAX_REQUEST_BODY, box_cache_size: int = 20000) -> None:
        self._control = control
        self.window = window
        self.max_body = max_body
        self._boxes: OrderedDict[bytes, Box] = OrderedDict()
        self._box_cache_size = box_cache_size
        self._seen: set[bytes] = set()
        self._expiry: deque[tuple[float, bytes]] = deque()

    def box_for(self, machine: MachinePublicKey) -> Box:
        box = self._boxes.get(machine.raw)
        if box is None:
            box = self._control.box(machine)
            self._boxes[machine.raw] = box
            if len(self._boxes) > self._box_cache_size:
                self._boxes.popitem(last=False)
        else:
            self._boxes.move_to_end(machine.raw)
        return box

    def open(self, header: str | None, body: bytes, now: float) -> OpenedRequest:
        self._forget(now)
        if not header:
            raise SealError(f"missing {MACHINE_HEADER} header (want mkey:<64 hex>)", "missing_machine_header")
        try:
            machine = MachinePublicKey.from_text(header)
        except KeysError as err:
            raise SealError(f"bad {MACHINE_HEADER} header: {err}", "bad_machine_header") from None
        if len(body) > self.max_body:
            raise SealError(f"request body is {len(body)} bytes, limit {self.max_body}", "body_too_large")
        box = self.box_for(machine)
        try:
            plain = box.open(body)
        except BoxOpenError:
            raise SealError("request body does not open: not sealed by this machine key to this control key",
                            "bad_box") from None
        try:
            payload = json.loads(plain)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise SealError("request body is not valid JSON inside its box", "bad_json") from None
        if not isinstance(payload, dict):
            raise SealError(f"request JSON must be an object, got {type(payload).__name__}", "bad_json")
        t = payload.get("time")
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
            raise SealError("request has no numeric 'time' field", "bad_time")  # NaN would pass any window
        if abs(now - t) > self.window:
            raise SealError(f"request time is {now - t:+.0f} s off the server clock (window ±{self.window:.0f} s)",
                            "stale_time")
        nonce = body[: Box.NONCE_LEN]
        if nonce in self._seen:
            raise SealError("request nonce was already used (replayed request)", "replayed")
        self._seen.add(nonce)
        self._expiry.append((now + 2 * self.window, nonce))
        return OpenedRequest(machine, payload, box)

    def _forget(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] < now:
            self._seen.discard(self._expiry.popleft()[1])


def encode_frame(sealed: bytes) -> bytes:
    return _LEN.pack(len(sealed)) + sealed


class FrameDecoder:
    """Splits a byte stream into sealed frames; feed it any chunking."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while len(self._buf) >= 4:
            (n,) = _LEN.unpack_from(self._buf)
            if n > self._max:
                raise FrameError(f"map frame of {n} bytes exceeds the {self._max}-byte limit")
            if len(self._buf) < 4 + n:
                break
            out.append(bytes(self._buf[4 : 4 + n]))
            del self._buf[: 4 + n]
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)
