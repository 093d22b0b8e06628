"""The small HTTP/1.1 layer in front of DERP, sans-IO: parse a request head, build responses.

Only what a DERP server needs: one request per connection, GET/HEAD/POST, no bodies read, a hard
cap on the head's size. The upgrade on `/derp` hands the raw byte stream to the frame layer, which
is why this is hand-written rather than a web framework.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import HttpUpgradeError

__all__ = [
    "MAX_HEAD_LEN",
    "HttpRequest",
    "HttpResponseHead",
    "generate_204_response",
    "parse_request_head",
    "parse_response_head",
    "plain_response",
    "upgrade_request",
    "upgrade_response",
]

MAX_HEAD_LEN = 8192
_END = b"\r\n\r\n"
_CHALLENGE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_REASONS = {101: "Switching Protocols", 200: "OK", 204: "No Content", 400: "Bad Request", 404: "Not Found",
            405: "Method Not Allowed", 426: "Upgrade Required", 431: "Request Header Fields Too Large",
            503: "Service Unavailable"}


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str
    query: str
    version: str
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names; repeated ones joined by ", "

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

    @property
    def wants_derp_upgrade(self) -> bool:
        upgrade = self.header("upgrade").lower()
        return upgrade in ("derp", "websocket") and "upgrade" in self.header("connection").lower()


@dataclass(frozen=True, slots=True)
class HttpResponseHead:
    status: int
    reason: str
    headers: dict[str, str]

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


def _split_head(buf: bytes | bytearray, what: str) -> tuple[list[str], int] | None:
    end = buf.find(_END)
    if end < 0:
        if len(buf) > MAX_HEAD_LEN:
            raise HttpUpgradeError(f"HTTP {what} head exceeds {MAX_HEAD_LEN} bytes without ending", status=431)
        return None
    if end + len(_END) > MAX_HEAD_LEN:
        raise HttpUpgradeError(f"HTTP {what} head is {end + 4} bytes, limit {MAX_HEAD_LEN}", status=431)
    try:
        text = bytes(buf[:end]).decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
        raise HttpUpgradeError(f"HTTP {what} head is not text", status=400) from None
    return text.split("\r\n"), end + len(_END)


def _headers(lines: list[str], what: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or any(c in name for c in " \t"):
            raise HttpUpgradeError(f"malformed HTTP {what} header line {line[:40]!r}", status=400)
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


def parse_request_head(buf: bytes | bytearray) -> tuple[HttpRequest, int] | None:
    """(request, bytes consumed) once the head is complete, None while incomplete; HttpUpgradeError if bad."""
    split = _split_head(buf, "request")
    if split is None:
        return None
    lines, consumed = split
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0].isalpha():
        raise HttpUpgradeError(f"malformed HTTP request line {lines[0][:60]!r}", status=400)
    method, target, version = parts
    path, _, query = target.partition("?")
    return HttpRequest(method.upper(), path, query, version, _headers(lines[1:], "request")), consumed


def parse_response_head(buf: bytes | bytearray) -> tuple[HttpResponseHead, int] | None:
    """Client side: (response head, bytes consumed) or None while incomplete."""
    split = _split_head(buf, "response")
    if split is None:
        return None
    lines, consumed = split
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HttpUpgradeError(f"malformed HTTP status line {lines[0][:60]!r}")
    reason = parts[2] if len(parts) > 2 else ""
    return HttpResponseHead(int(parts[1]), reason, _headers(lines[1:], "response")), consumed


def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def plain_response(status: int, body: bytes = b"", *, content_type: str = "text/plain; charset=utf-8",
                   extra: list[tuple[str, str]] | None = None, head_only: bool = False) -> bytes:
    """A complete response that closes the connection."""
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), ("Connection", "close")]
    headers += extra or []
    return _head(status, headers) + (b"" if head_only else body)


def upgrade_response(server_pub_hex: str) -> bytes:
    """The 101 that switches the connection to DERP framing."""
    return _head(101, [("Upgrade", "DERP"), ("Connection", "Upgrade"), ("Derp-Version", "2"),
                       ("Derp-Public-Key", server_pub_hex)])


def generate_204_response(challenge: str, *, head_only: bool = False) -> bytes:
    """Captive-portal check: 204, echoing a well-formed X-Tailscale-Challenge as X-Tailscale-Response."""
    extra = [("X-Tailscale-Response", f"response {challenge}")] if _CHALLENGE.fullmatch(challenge) else []
    return _head(204, [("Connection", "close"), *extra])


def upgrade_request(host: str, path: str = "/derp") -> bytes:
    """Client side: the GET that asks for the DERP upgrade."""
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n"
            f"User-Agent: meshctl-derp\r\n\r\n").encode("latin-1")
