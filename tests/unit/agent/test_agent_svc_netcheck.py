"""netcheck's pure parts: which STUN servers to probe, the report (hard NAT, nearest region), reply matching."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from meshctl.agent.netcheck import ProbeResult, StunTarget, StunWaiter, build_report, run_netcheck, stun_targets
from meshctl.stun import StunError, build_response, parse_request
from meshctl.wire.derpmap import DERPMap, DerpNode, DerpRegion

A = StunTarget(900, "lab", "900a", "192.0.2.1", 3478)
B = StunTarget(901, "far", "901a", "192.0.2.2", 3478)


def test_targets_are_the_first_two_stun_nodes_of_each_region() -> None:
    derp_map = DERPMap({
        901: DerpRegion(901, "far", "Far", (DerpNode("901a", 901, "far.example", ipv4="192.0.2.2"),)),
        900: DerpRegion(900, "lab", "Lab", (
            DerpNode("900a", 900, "a.lab", ipv4="192.0.2.1"),
            DerpNode("900b", 900, "b.lab", stun_port=-1),  # STUN disabled
            DerpNode("900c", 900, "c.lab", stun_port=3479),
            DerpNode("900d", 900, "d.lab"),
        )),
    })
    assert stun_targets(derp_map) == [
        A, StunTarget(900, "lab", "900c", "c.lab", 3479), B,
    ]


def test_same_mapping_from_two_destinations_is_an_easy_nat() -> None:
    report = build_report([
        ProbeResult(A, ("198.51.100.7", 41641), 0.004),
        ProbeResult(B, ("198.51.100.7", 41641), 0.002),
    ])
    assert report.mapping_varies_by_dest is False
    assert report.preferred_region == 901
    assert report.global_addr == "198.51.100.7:41641"
    assert report.udp


def test_different_port_per_destination_is_a_hard_nat() -> None:
    report = build_report([
        ProbeResult(A, ("198.51.100.7", 41641), 0.004),
        ProbeResult(B, ("198.51.100.7", 50123), 0.002),
    ])
    assert report.mapping_varies_by_dest is True
    assert report.to_json()["mappingVariesByDestIP"] is True


def test_one_answer_cannot_tell_and_no_answer_means_no_udp() -> None:
    one = build_report([ProbeResult(A, ("198.51.100.7", 41641), 0.004), ProbeResult(B, error="timeout")])
    assert one.mapping_varies_by_dest is None
    assert one.preferred_region == 900
    none = build_report([ProbeResult(A, error="timeout"), ProbeResult(B, error="timeout")])
    assert (none.udp, none.preferred_region, none.global_addr) == (False, None, None)
    regions = none.to_json()["regions"]
    assert [(r["regionId"], r["reflexive"], r["latencyMs"], r["error"]) for r in regions] == [
        (900, None, None, "timeout"), (901, None, None, "timeout"),
    ]


def test_json_shape_for_the_cli() -> None:
    data = build_report([ProbeResult(A, ("2001:db8::7", 41641), 0.0015)]).to_json()
    assert data["regions"][0] == {"regionId": 900, "regionCode": "lab", "node": "900a", "stun": "192.0.2.1:3478",
                                  "reflexive": "[2001:db8::7]:41641", "latencyMs": 1.5, "error": None}


def test_waiter_matches_replies_by_transaction_and_ignores_strangers() -> None:
    async def scenario() -> tuple[tuple[str, int], float, bool, bool]:
        clock = [100.0]
        sent: list[tuple[bytes, tuple[str, int]]] = []
        waiter = StunWaiter(lambda data, addr: sent.append((data, addr)), clock=lambda: clock[0])
        task = asyncio.ensure_future(waiter("192.0.2.1", 3478, 3.0))
        await asyncio.sleep(0)
        request, addr = sent[0]
        txid = parse_request(request).txid
        stranger = waiter.feed(build_response(b"\x00" * 12, ipaddress.ip_address("203.0.113.1"), 1))
        not_stun = waiter.feed(b"hello")
        clock[0] += 0.025
        assert waiter.feed(build_response(txid, ipaddress.ip_address("198.51.100.7"), 41641))
        mapped, rtt = await task
        assert addr == ("192.0.2.1", 3478)
        return mapped, rtt, stranger, not_stun

    mapped, rtt, stranger, not_stun = asyncio.run(scenario())
    assert mapped == ("198.51.100.7", 41641)
    assert rtt == pytest.approx(0.025)
    assert (stranger, not_stun) == (False, False)


def test_waiter_retransmits_with_fresh_transactions_then_gives_up() -> None:
    async def scenario() -> list[bytes]:
        sent: list[bytes] = []
        waiter = StunWaiter(lambda data, addr: sent.append(data), attempts=3)
        with pytest.raises(StunError, match=r"no STUN answer from 192.0.2.1:3478 within 0.1 s"):
            await waiter("192.0.2.1", 3478, 0.1)
        return sent

    sent = asyncio.run(scenario())
    assert len({parse_request(data).txid for data in sent}) == 3


def test_failures_are_results_not_exceptions() -> None:
    derp_map = DERPMap({900: DerpRegion(900, "lab", "Lab", (DerpNode("900a", 900, "a", ipv4="192.0.2.1"),))})

    async def prober(host: str, port: int, timeout: float) -> tuple[tuple[str, int], float]:
        raise OSError(101, "Network is unreachable")

    report = asyncio.run(run_netcheck(derp_map, prober))
    assert report.probes[0].error == "[Errno 101] Network is unreachable"
    assert report.udp is False
