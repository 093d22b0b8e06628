"""The HTTP layer in front of DERP: request heads whole / byte by byte / with DERP bytes after them, limits,
malformed input, and the exact responses testinfra probes rely on."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshctl.derp.errors import HttpUpgradeError
from meshctl.derp.http import (
    MAX_HEAD_LEN,
    generate_204_response,
    parse_request_head,
    parse_response_head,
    plain_response,
    upgrade_request,
    upgrade_response,
)

UPGRADE = b"GET /derp HTTP/1.1\r\nHost: derp1:8443\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n"


def test_upgrade_request_whole() -> None:
    parsed = parse_request_head(UPGRADE)
    assert parsed is not None
    req, used = parsed
    assert used == len(UPGRADE)
    assert (req.method, req.path, req.version) == ("GET", "/derp", "HTTP/1.1")
    assert req.wants_derp_upgrade
    assert req.header("HOST") == "derp1:8443"


def test_upgrade_request_byte_at_a_time() -> None:
    for i in range(1, len(UPGRADE)):
        assert parse_request_head(UPGRADE[:i]) is None
    assert parse_request_head(UPGRADE) is not None


def test_upgrade_request_with_frames_after_it() -> None:
    trailing = b"\x02\x00\x00\x00\x40" + b"x" * 10
    parsed = parse_request_head(UPGRADE + trailing)
    assert parsed is not None
    _, used = parsed
    assert (UPGRADE + trailing)[used:] == trailing


def test_our_client_request_is_an_upgrade() -> None:
    parsed = parse_request_head(upgrade_request("10.0.0.2:8443"))
    assert parsed is not None and parsed[0].wants_derp_upgrade


def test_no_upgrade_header_is_not_an_upgrade() -> None:
    parsed = parse_request_head(b"GET /derp HTTP/1.1\r\nHost: x\r\n\r\n")
    assert parsed is not None and not parsed[0].wants_derp_upgrade


def test_query_string_is_split_off() -> None:
    parsed = parse_request_head(b"GET /bootstrap-dns?q=example.com HTTP/1.1\r\n\r\n")
    assert parsed is not None
    assert (parsed[0].path, parsed[0].query) == ("/bootstrap-dns", "q=example.com")


def test_head_over_the_limit_without_an_end_is_refused() -> None:
    with pytest.raises(HttpUpgradeError) as exc:
        parse_request_head(b"GET /derp HTTP/1.1\r\nX: " + b"a" * MAX_HEAD_LEN)
    assert exc.value.status == 431
    assert str(exc.value) == "HTTP request head exceeds 8192 bytes without ending"


@pytest.mark.parametrize("raw", [
    b"\x16\x03\x01\x02\x00 garbage\r\n\r\n",          # a TLS ClientHello sent to the plain port
    b"GET /derp\r\n\r\n",
    b"GET /derp HTTP/1.1\r\nNoColonHere\r\n\r\n",
    b"GET /derp HTTP/1.1\r\nBad Name: x\r\n\r\n",
])
def test_malformed_request_heads(raw: bytes) -> None:
    with pytest.raises(HttpUpgradeError) as exc:
        parse_request_head(raw)
    assert exc.value.status == 400


def test_upgrade_response_headers() -> None:
    raw = upgrade_response("ab" * 32)
    parsed = parse_response_head(raw)
    assert parsed is not None
    head, used = parsed
    assert used == len(raw)
    assert head.status == 101
    assert head.header("upgrade") == "DERP"
    assert head.header("derp-version") == "2"
    assert head.header("derp-public-key") == "ab" * 32


def test_426_body() -> None:
    raw = plain_response(426, b"DERP requires connection upgrade")
    assert raw.startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
    assert raw.endswith(b"\r\n\r\nDERP requires connection upgrade")


def test_generate_204_echoes_a_valid_challenge_only() -> None:
    assert b"X-Tailscale-Response: response abc.DEF_1:2-3\r\n" in generate_204_response("abc.DEF_1:2-3")
    assert b"X-Tailscale-Response" not in generate_204_response("bad challenge with spaces")
    assert b"X-Tailscale-Response" not in generate_204_response("a" * 65)
    assert generate_204_response("").startswith(b"HTTP/1.1 204 No Content\r\n")


def test_non_101_response_status() -> None:
    parsed = parse_response_head(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    assert parsed is not None and parsed[0].status == 404


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_request_head_parser(data: bytes) -> None:
    try:
        parsed = parse_request_head(data)
    except HttpUpgradeError as e:
        assert e.status in (400, 431)
        return
    if parsed is not None:
        assert 0 < parsed[1] <= len(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_request_head_after_a_valid_request_line(tail: bytes) -> None:
    try:
        parse_request_head(b"GET /derp HTTP/1.1\r\n" + tail)
    except HttpUpgradeError:
        pass
