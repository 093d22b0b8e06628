"""MagicDNS answers built from a name table: byte-level queries in, DNS responses (or a forward decision) out."""

from __future__ import annotations

import struct

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshctl.agent.dns import NAME_TTL, DnsConfigError, Forward, MagicDNS, NameTable, Reply, decide

DOMAIN = "corp.mesh"
TABLE = NameTable.build(
    DOMAIN,
    {
        "web": ["100.64.0.2", "fd7a:115c:a1e0::2"],
        "db.corp.mesh": ["100.64.0.3", "fd7a:115c:a1e0::3"],
        "v4only": ["100.64.0.4"],
    },
)


def raw_query(name: str, qtype: int, qid: int = 0x1234, flags: int = 0x0100) -> bytes:
    """A query built by hand (RFC 1035 §4.1): header, one question, class IN."""
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\x00"
    return struct.pack("!HHHHHH", qid, flags, 1, 0, 0, 0) + labels + struct.pack("!HH", qtype, 1)


def answer(query: bytes) -> dns.message.Message:
    decision = decide(query, TABLE)
    assert isinstance(decision, Reply), decision
    return dns.message.from_wire(decision.wire)


def addresses(msg: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in msg.answer for rd in rrset)


def test_a_record_of_a_peer_by_fqdn() -> None:
    msg = answer(raw_query("web.corp.mesh", 1, qid=0xBEEF))
    assert msg.id == 0xBEEF
    assert msg.rcode() == dns.rcode.NOERROR
    assert msg.flags & dns.flags.QR and msg.flags & dns.flags.AA and msg.flags & dns.flags.RA
    assert addresses(msg) == ["100.64.0.2"]
    assert msg.answer[0].ttl == NAME_TTL
    assert msg.question[0].name.to_text() == "web.corp.mesh."


def test_aaaa_record_and_case_insensitive_names() -> None:
    msg = answer(raw_query("DB.Corp.MESH", 28))
    assert addresses(msg) == ["fd7a:115c:a1e0::3"]
    # the answer echoes the question's spelling, as resolvers expect (0x20 randomisation)
    assert msg.answer[0].name.to_text() == "DB.Corp.MESH."


def test_name_with_no_record_of_the_type_is_nodata_not_nxdomain() -> None:
    msg = answer(raw_query("v4only.corp.mesh", 28))
    assert msg.rcode() == dns.rcode.NOERROR
    assert msg.answer == []


def test_unknown_name_inside_the_mesh_domain_is_nxdomain_and_never_forwarded() -> None:
    msg = answer(raw_query("ghost.corp.mesh", 1))
    assert msg.rcode() == dns.rcode.NXDOMAIN
    assert msg.flags & dns.flags.AA


def test_names_outside_the_mesh_are_forwarded() -> None:
    assert decide(raw_query("example.com", 1), TABLE) == Forward("example.com.")
    # a name that merely ends like the domain is not inside it
    assert decide(raw_query("xcorp.mesh", 1), TABLE) == Forward("xcorp.mesh.")


def test_reverse_lookup_of_a_mesh_address() -> None:
    msg = answer(raw_query("2.0.64.100.in-addr.arpa", 12))
    assert [rd.to_text() for rrset in msg.answer for rd in rrset] == ["web.corp.mesh."]


def test_any_query_returns_both_families() -> None:
    msg = answer(raw_query("web.corp.mesh", 255))
    assert addresses(msg) == ["100.64.0.2", "fd7a:115c:a1e0::2"]


def test_edns_query_gets_an_edns_answer() -> None:
    query = dns.message.make_query("web.corp.mesh", "A", use_edns=0, payload=1232)
    msg = answer(query.to_wire())
    assert msg.edns == 0
    assert addresses(msg) == ["100.64.0.2"]


def test_malformed_query_gets_formerr_with_its_id() -> None:
    broken = raw_query("web.corp.mesh", 1, qid=0x4242)[:-3]  # question cut short
    msg = answer(broken)
    assert msg.id == 0x4242
    assert msg.rcode() == dns.rcode.FORMERR


def test_garbage_shorter_than_a_header_and_responses_are_dropped() -> None:
    assert decide(b"\x00\x01\x02", TABLE) is None
    response = raw_query("web.corp.mesh", 1, flags=0x8180)
    assert decide(response, TABLE) is None


def test_other_opcodes_are_not_implemented() -> None:
    query = dns.message.make_query("web.corp.mesh", "A")
    query.set_opcode(dns.opcode.NOTIFY)
    msg = answer(query.to_wire())
    assert msg.rcode() == dns.rcode.NOTIMP


def test_each_byte_prefix_of_a_valid_query_is_never_answered_wrongly() -> None:
    query = raw_query("web.corp.mesh", 1)
    for cut in range(len(query)):
        decision = decide(query[:cut], TABLE)
        if isinstance(decision, Reply):
            assert dns.message.from_wire(decision.wire).rcode() == dns.rcode.FORMERR
        else:
            assert decision is None


def test_table_rejects_bad_addresses_and_the_bare_domain() -> None:
    with pytest.raises(DnsConfigError, match="'web'"):
        NameTable.build(DOMAIN, {"web": ["100.64.0.300"]})
    with pytest.raises(DnsConfigError, match="mesh domain itself"):
        NameTable.build(DOMAIN, {"corp.mesh": ["100.64.0.1"]})



@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_crash_the_resolver(data: bytes) -> None:
    decision = decide(data, TABLE)
    if isinstance(decision, Reply):
        reply = dns.message.from_wire(decision.wire)
        assert reply.flags & dns.flags.QR
        assert reply.id == int.from_bytes(data[:2], "big")


@given(st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True), st.sampled_from(["A", "AAAA", "MX"]))
def test_every_name_under_the_domain_is_answered_locally(label: str, qtype: str) -> None:
    decision = decide(dns.message.make_query(f"{label}.corp.mesh", qtype).to_wire(), TABLE)
    assert isinstance(decision, Reply)
    expected = dns.rcode.NOERROR if label in ("web", "db", "v4only") else dns.rcode.NXDOMAIN
    assert dns.message.from_wire(decision.wire).rcode() == expected


def test_one_bad_netmap_entry_does_not_take_the_other_names_away(caplog: pytest.LogCaptureFixture) -> None:
    resolver = MagicDNS("corp.mesh", claim_on=None)
    resolver.update_names({"web": ["100.64.0.2"], "x" * 64: ["100.64.0.3"], "db": ["not-an-ip"]})
    assert set(resolver.table.names) == {dns.name.from_text("web.corp.mesh.")}
    assert len(resolver.table.rejected) == 2
    assert "MagicDNS: skipping a name: 'db'" in caplog.text
    with pytest.raises(DnsConfigError):
        resolver.update_names({"web": ["100.64.0.2"]}, domain="x" * 64 + ".mesh")
    assert set(resolver.table.names) == {dns.name.from_text("web.corp.mesh.")}  # previous table kept
