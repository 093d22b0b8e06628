"""netcheck: STUN to every DERP region from the agent's disco socket; reflexive address, latency, hard NAT.

The probes must leave from the socket WireGuard and disco use, otherwise the mapped address says
nothing about the NAT mapping peers will see (DESIGN §5). Two ways to send them:

* `StunWaiter` — for a UDP socket owned by the daemon's asyncio transport: it sends through a
  callback and the daemon hands it every STUN datagram (`meshctl.stun.is_stun`) it receives.
  Replies are matched by transaction id (a new one per retransmission, so round trips are exact)
  and probes run concurrently.
* `socket_prober(sock)` — for a plain socket nobody else reads; probes run one after another.

`build_report` is pure: probe results in, the report out. The mapping "varies by destination"
(endpoint-dependent mapping, a hard NAT) when two destinations saw different reflexive ip:ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..stun import StunError, build_request, is_stun, parse_response
from ..stun import probe as stun_probe
from ..stun.message import new_transaction_id
from ..wire.derpmap import DERPMap

__all__ = [
    "NetcheckReport",
    "ProbeResult",
    "StunProber",
    "StunTarget",
    "StunWaiter",
    "build_report",
    "run_netcheck",
    "socket_prober",
    "stun_targets",
]

Addr = tuple[str, int]


@dataclass(frozen=True)
class StunTarget:
    region_id: int
    region_code: str
    node_name: str
    host: str
    port: int


@dataclass(frozen=True)
class ProbeResult:
    target: StunTarget
    reflexive: Addr | None = None
    latency: float | None = None  # seconds
    error: str | None = None


@dataclass(frozen=True)
class NetcheckReport:
    probes: tuple[ProbeResult, ...]
    mapping_varies_by_dest: bool | None  # None: fewer than two destinations answered
    preferred_region: int | None
    global_addr: str | None

    @property
    def udp(self) -> bool:
        return any(p.reflexive is not None for p in self.probes)

    def to_json(self) -> dict[str, Any]:
        return {
            "udp": self.udp,
            "mappingVariesByDestIP": self.mapping_varies_by_dest,
            "preferredDerp": self.preferred_region,
            "globalAddr": self.global_addr,
            "regions": [
                {
                    "regionId": p.target.region_id,
                    "regionCode": p.target.region_code,
                    "node": p.target.node_name,
                    "stun": f"{p.target.host}:{p.target.port}",
                    "reflexive": _fmt(p.reflexive) if p.reflexive else None,
                    "latencyMs": round(p.latency * 1000, 3) if p.latency is not None else None,
                    "error": p.error,
                }
                for p in self.probes
            ],
        }


def _fmt(addr: Addr) -> str:
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"


def stun_targets(derp_map: DERPMap, per_region: int = 2) -> list[StunTarget]:
    """The first `per_region` STUN-capable nodes of each region (Tailscale probes the first one or two)."""
    targets = []
    for region_id in sorted(derp_map.regions):
        region = derp_map.regions[region_id]
        taken = 0
        for node in region.nodes:
            port = node.effective_stun_port()
            host = node.stun_test_ip or node.ipv4 or node.host_name
            if port is None or not host or taken >= per_region:
                continue
            targets.append(StunTarget(region_id, region.region_code, node.name, host, port))
            taken += 1
    return targets


def build_report(results: Sequence[ProbeResult]) -> NetcheckReport:
    answered = [r for r in results if r.reflexive is not None and r.latency is not None]
    varies: bool | None = None
    for version_v6 in (False, True):  # IPv4 decides when it can, as in Tailscale
        same_family = [r for r in answered if (":" in r.reflexive[0]) == version_v6]  # type: ignore[index]
        destinations = {(r.target.host, r.target.port) for r in same_family}
        if len(destinations) >= 2:
            varies = len({r.reflexive for r in same_family}) > 1
            break
    best: dict[int, float] = {}
    for r in answered:
        assert r.latency is not None
        best[r.target.region_id] = min(r.latency, best.get(r.target.region_id, r.latency))
    preferred = min(best, key=lambda rid: (best[rid], rid)) if best else None
    first = next((r.reflexive for r in answered if r.target.region_id == preferred), None)
    return NetcheckReport(tuple(results), varies, preferred, _fmt(first) if first else None)


class StunProber(Protocol):
    async def __call__(self, host: str, port: int, timeout: float) -> tuple[Addr, float]:
        """(reflexive ip:port, round trip in seconds); raises StunError or OSError on failure."""
        ...


class StunWaiter:
    """STUN over a socket the daemon reads: `send(data, addr)` transmits, `feed(data)` delivers replies."""

    def __init__(self, send: Callable[[bytes, Addr], None], *, attempts: int = 3,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._send = send
        self._attempts = attempts
        self._clock = clock
        self._waiting: dict[bytes, tuple[asyncio.Future[tuple[Addr, float]], float]] = {}

    def feed(self, data: bytes) -> bool:
        """Offer a received datagram; True when it answered one of our probes."""
        if not is_stun(data) or len(data) < 20:
            return False
        waiter = self._waiting.get(data[8:20])
        if waiter is None:
            return False
        future, sent_at = waiter
        try:
            response = parse_response(data, data[8:20])
        except StunError:
            return False
        if not future.done():
            future.set_result(((str(response.ip), response.port), self._clock() - sent_at))
        return True

    async def __call__(self, host: str, port: int, timeout: float) -> tuple[Addr, float]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Addr, float]] = loop.create_future()
        txids = []
        try:
            for _ in range(self._attempts):
                txid = new_transaction_id()
                txids.append(txid)
                self._waiting[txid] = (future, self._clock())
                self._send(build_request(txid), (host, port))
                with contextlib.suppress(TimeoutError):
                    return await asyncio.wait_for(asyncio.shield(future), timeout / self._attempts)
            raise StunError(f"no STUN answer from {host}:{port} within {timeout:.1f} s")
        finally:
            for txid in txids:
                self._waiting.pop(txid, None)


def socket_prober(sock: socket.socket) -> StunProber:
    """A prober sending from `sock` (which nobody else may read while it runs)."""

    async def prober(host: str, port: int, timeout: float) -> tuple[Addr, float]:
        start = time.monotonic()
        mapped = await stun_probe(host, port, sock=sock, timeout=timeout)
        return mapped, time.monotonic() - start

    return prober


async def run_netcheck(derp_map: DERPMap, prober: StunProber, *, timeout: float = 3.0,
                       parallel: bool = True) -> NetcheckReport:
    """Probe every region's STUN nodes and build the report (failures are results, not exceptions)."""

    async def one(target: StunTarget) -> ProbeResult:
        try:
            mapped, rtt = await prober(target.host, target.port, timeout)
        except (StunError, OSError) as err:
            return ProbeResult(target, error=str(err) or type(err).__name__)
        return ProbeResult(target, mapped, rtt)

    targets = stun_targets(derp_map)
    if not parallel:
        return build_report([await one(t) for t in targets])
    return build_report(list(await asyncio.gather(*(one(t) for t in targets))))
