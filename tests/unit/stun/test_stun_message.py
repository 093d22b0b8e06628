"""STUN codec: RFC 5769 vectors, a Tailscale-style request vector, whole and with trailing data,
exact errors for malformed input, the no-amplification rule, and a bounded hypothesis fuzz."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshctl.stun.errors import (
    MalformedAttrsError,
    NotStunError,
    StunParseError,
    WrongFingerprintError,
    WrongTransactionError,
)
from meshctl.stun.message import (
    build_request,
    build_response,
    is_stun,
    parse_request,
    parse_response,
    response_allowed,
)

VECTORS = Path(__file__).parents[2] / "vectors" / "stun"
RFC_TXID = bytes.fromhex("b7e7a701bc34d686fa87dfae")


def _load(name: str) -> bytes:
    lines = (VECTORS / name).read_text().splitlines()
    return bytes.fromhex(" ".join(line for line in lines if not line.startswith("#")))


def test_rfc5769_request_parses_with_its_fingerprint() -> None:
    req = parse_request(_load("rfc5769-request.hex"))
    assert req.txid == RFC_TXID
    assert req.software == b"STUN test client"
    assert req.has_fingerprint
    assert not req.tailscale_style


def test_rfc5769_ipv4_response() -> None:
    resp = parse_response(_load("rfc5769-response-ipv4.hex"), RFC_TXID)
    assert (resp.ip, resp.port) == (ipaddress.ip_address("192.0.2.1"), 32853)


def test_rfc5769_ipv6_response() -> None:
    resp = parse_response(_load("rfc5769-response-ipv6.hex"), RFC_TXID)
    assert (resp.ip, resp.port) == (ipaddress.ip_address("2001:db8:1234:5678:11:2233:4455:6677"), 32853)


def test_our_xor_mapped_address_matches_the_rfc5769_bytes() -> None:
    ours4 = build_response(RFC_TXID, ipaddress.IPv4Address("192.0.2.1"), 32853)
    assert ours4[20:] == bytes.fromhex("0020 0008 0001 a147 e112a643")
    ours6 = build_response(RFC_TXID, ipaddress.IPv6Address("2001:db8:1234:5678:11:2233:4455:6677"), 32853)
    assert ours6[20:] == bytes.fromhex("0020 0014 0002 a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9")
    assert ours4[:4] == bytes.fromhex("0101 000c") and ours6[:4] == bytes.fromhex("0101 0018")


def test_tailscale_style_request_vector() -> None:
    raw = _load("tailscale-request.hex")
    assert build_request(bytes(12)) == raw
    req = parse_request(raw)
    assert req.tailscale_style and req.software == b"tailnode" and req.txid == bytes(12)


def test_plain_request_without_attributes() -> None:
    raw = build_request(RFC_TXID, software=None, fingerprint=False)
    assert raw == bytes.fromhex("0001 0000 2112a442") + RFC_TXID
    req = parse_request(raw)
    assert (req.software, req.has_fingerprint) == (None, False)


def test_ipv4_mapped_source_is_answered_as_ipv4() -> None:
    resp = build_response(RFC_TXID, ipaddress.IPv6Address("::ffff:192.0.2.1"), 32853)
    assert parse_response(resp).ip == ipaddress.IPv4Address("192.0.2.1")


@pytest.mark.parametrize("name", ["rfc5769-request.hex", "tailscale-request.hex"])
def test_trailing_data_is_refused(name: str) -> None:
    with pytest.raises(NotStunError, match="want a multiple of 4 matching the datagram"):
        parse_request(_load(name) + b"\x00\x00\x00\x00")


def test_bad_fingerprint() -> None:
    raw = bytearray(_load("tailscale-request.hex"))
    raw[-1] ^= 0xFF
    with pytest.raises(WrongFingerprintError) as exc:
        parse_request(bytes(raw))
    assert exc.value.found != exc.value.wanted
    assert str(exc.value).startswith("STUN FINGERPRINT is 0x")


def test_fingerprint_not_last() -> None:
    raw = bytearray(_load("tailscale-request.hex"))
    # append a SOFTWARE attribute after the fingerprint and fix the length
    extra = bytes.fromhex("8022 0004 61626364")
    raw += extra
    raw[2:4] = (len(raw) - 20).to_bytes(2, "big")
    with pytest.raises(MalformedAttrsError, match="FINGERPRINT is not the last attribute"):
        parse_request(bytes(raw))


@pytest.mark.parametrize(("raw", "error", "message"), [
    (b"\x00\x01\x00", NotStunError, "not a STUN packet: got 3 bytes, want at least 20"),
    (bytes.fromhex("c001 0000 2112a442") + bytes(12), NotStunError,
     "not a STUN packet: got first byte 0xc0 (top bits set), want top two bits zero"),
    (bytes.fromhex("0001 0000 deadbeef") + bytes(12), NotStunError,
     "not a STUN packet: got magic cookie deadbeef, want 2112a442"),
    (bytes.fromhex("0101 0000 2112a442") + bytes(12), NotStunError,
     "not a STUN packet: got message type 0x0101, want 0x0001 (BINDING_REQUEST)"),
    (bytes.fromhex("0001 0008 2112a442") + bytes(12) + bytes.fromhex("8022 0010 41414141"), MalformedAttrsError,
     "malformed STUN attributes: attribute 0x8022 at offset 20 runs 12 bytes past the end"),
    (bytes.fromhex("0001 0004 2112a442") + bytes(12) + bytes.fromhex("8022 0001"), MalformedAttrsError,
     "malformed STUN attributes: attribute 0x8022 at offset 20 runs 1 bytes past the end"),
])
def test_malformed_requests(raw: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as exc:
        parse_request(raw)
    assert str(exc.value) == message


def test_response_for_another_transaction() -> None:
    resp = build_response(RFC_TXID, ipaddress.IPv4Address("192.0.2.1"), 1)
    with pytest.raises(WrongTransactionError):
        parse_response(resp, bytes(12))


def test_response_without_address() -> None:
    raw = bytes.fromhex("0101 0000 2112a442") + RFC_TXID
    with pytest.raises(MalformedAttrsError, match="no XOR-MAPPED-ADDRESS or MAPPED-ADDRESS"):
        parse_response(raw)


def test_plain_mapped_address_is_accepted() -> None:
    raw = bytes.fromhex("0101 000c 2112a442") + RFC_TXID + bytes.fromhex("0001 0008 0001 1f90 0a000002")
    resp = parse_response(raw)
    assert (str(resp.ip), resp.port) == ("10.0.0.2", 8080)


def test_no_amplification() -> None:
    tailscale_req = len(_load("tailscale-request.hex"))  # 40 bytes
    assert response_allowed(tailscale_req, 32) and response_allowed(tailscale_req, 44)
    assert response_allowed(20, 32)       # bare IPv4 request: the 32-byte minimum answer
    assert not response_allowed(20, 44)   # bare request asking for a 44-byte IPv6 answer: 2.2x, refused
    assert not response_allowed(100, 151)


def test_is_stun_demux() -> None:
    assert is_stun(_load("tailscale-request.hex"))
    assert not is_stun(b"\x01\x00\x00\x00" + bytes(28))  # a WireGuard handshake initiation
    assert not is_stun(b"TS\xf0\x9f\x92\xac" + bytes(30))  # disco


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_parsers_raise_only_parse_errors(data: bytes) -> None:
    for parse in (parse_request, parse_response):
        try:
            parse(data)
        except StunParseError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=12, max_size=12), st.ip_addresses(), st.integers(0, 65535))
def test_response_round_trip(txid: bytes, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> None:
    resp = parse_response(build_response(txid, ip, port), txid)
    want = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip
    assert (resp.ip, resp.port) == (want, port)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=12, max_size=12), st.one_of(st.none(), st.binary(max_size=40)), st.booleans())
def test_request_round_trip(txid: bytes, software: bytes | None, fingerprint: bool) -> None:
    req = parse_request(build_request(txid, software=software, fingerprint=fingerprint))
    assert (req.txid, req.software, req.has_fingerprint) == (txid, software, fingerprint)
