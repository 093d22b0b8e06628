"""The agent's side of the data plane: disco socket, per-peer relay sockets and path machines (shell).

WireGuard owns UDP `port`; the agent owns `port + 1` (the *disco socket*) for disco pings/pongs and
STUN. A peer's disco address is its WireGuard endpoint with the port plus one; a pong from
`X:(p+1)` makes `X:p` the peer's WireGuard endpoint (the NAT must keep the port offset: a known
limitation of not sharing WireGuard's socket).

Every peer also has a relay socket on 127.0.0.1 (ephemeral port). While a peer is relayed, that
socket is its WireGuard endpoint: datagrams WireGuard sends there are carried over DERP to the
peer's node key, and packets DERP delivers from that key are handed to WireGuard from the same
socket, so WireGuard sees one stable endpoint per relayed peer. Switching path only changes the
WireGuard endpoint; WireGuard's session (and any TCP connection inside it) carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..keys import DiscoPrivateKey, DiscoPublicKey, NodePublicKey
from ..stun.errors import StunParseError
from ..stun.message import build_request, is_stun, new_transaction_id, parse_response
from ..wire import Node
from . import disco
from .disco import CallMeMaybe, Endpoint, Ping, Pong
from .errors import DiscoError
from .path import PeerPath, SendCallMeMaybe, SendPing, UseDirect, UseRelay
from .wgconfig import KEEPALIVE_SECONDS, WgPeer

__all__ = ["DerpSender", "MagicSock", "PeerLink"]

log = logging.getLogger(__name__)


class DerpSender(Protocol):
    """Carries a packet over DERP to a node key, via the DERP region the peer calls home (0: ours)."""

    def send(self, region: int, dst: NodePublicKey, packet: bytes) -> None: ...


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, tuple[Any, ...]], None]) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("udp: %s", exc)


@dataclass
class PeerLink:
    """One peer's runtime state: its netmap node, path machine and relay socket."""

    node: Node
    path: PeerPath
    relay: asyncio.DatagramTransport | None = None
    relay_port: int = 0
    direct: Endpoint | None = None  # disco address of the direct path, when direct
    switches: list[tuple[float, str]] = field(default_factory=list)

    @property
    def wg_endpoint(self) -> str:
        if self.direct is not None:
            return str(self.direct.with_port(self.direct.port - 1))
        return f"127.0.0.1:{self.relay_port}"

    def path_text(self) -> str:
        return "direct" if self.direct is not None else f"relay({self.node.home_derp})"


def disco_candidates(endpoints: Iterable[str]) -> set[Endpoint]:
    """A peer's reported WireGuard endpoints → the disco addresses to ping (port + 1)."""
    out: set[Endpoint] = set()
    for text in endpoints:
        try:
            ep = Endpoint.parse(text)
        except ValueError:
            continue
        if 0 < ep.port < 0xFFFF:
            out.add(ep.with_port(ep.port + 1))
    return out


class MagicSock:
    """Owns the disco socket and the relay sockets; runs every peer's path machine on `tick()`."""

    def __init__(self, disco_key: DiscoPrivateKey, wg_port: int, disco_port: int, derp: DerpSender,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.disco_key = disco_key
        self.wg_port, self.disco_port = wg_port, disco_port
        self.derp = derp
        self.clock = clock
        self.peers: dict[int, PeerLink] = {}
        self.my_endpoints: tuple[str, ...] = ()
        self._disco: asyncio.DatagramTransport | None = None
        self._stun_waiters: dict[bytes, asyncio.Future[tuple[str, int]]] = {}
        self._ping_waiters: dict[bytes, asyncio.Future[float]] = {}

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(self._on_disco_datagram), local_addr=("0.0.0.0", self.disco_port))
        self._disco = transport

    def close(self) -> None:
        for link in self.peers.values():
            if link.relay is not None:
                link.relay.close()
        self.peers.clear()
        if self._disco is not None:
            self._disco.close()
            self._disco = None

    # -- netmap ------------------------------------------------------------------------------
    async def set_peers(self, nodes: Iterable[Node]) -> None:
        """Follow the netmap: new peers start relayed, gone peers lose their relay socket."""
        now = self.clock()
        want = {n.id: n for n in nodes if not n.expired}
        for nid in list(self.peers):
            if nid not in want:
                gone = self.peers.pop(nid)
                if gone.relay is not None:
                    gone.relay.close()
        loop = asyncio.get_running_loop()
        for nid, node in want.items():
            link = self.peers.get(nid)
            if link is None:
                link = PeerLink(node, PeerPath(now, disco_candidates(node.endpoints)))
                transport, _ = await loop.create_datagram_endpoint(
                    self._relay_protocol(nid),
                    local_addr=("127.0.0.1", 0))
                link.relay = transport
                link.relay_port = transport.get_extra_info("sockname")[1]
                self.peers[nid] = link
                log.info("peer %s (%s): relayed via 127.0.0.1:%d", node.name, node.node_key.short(), link.relay_port)
            else:
                if link.node.disco_key != node.disco_key:  # the peer restarted: its old pongs mean nothing
                    link.path = PeerPath(now, disco_candidates(node.endpoints))
                    link.direct = None
                link.node = node
                self._run(link, link.path.set_candidates(now, disco_candidates(node.endpoints)))

    def _relay_protocol(self, nid: int) -> Callable[[], _Udp]:
        return lambda: _Udp(lambda data, addr: self._on_relay_datagram(nid, data, addr))

    def wg_peers(self) -> list[WgPeer]:
        """What WireGuard should hold: every peer, at its direct endpoint or its relay socket."""
        return [WgPeer(link.node.node_key, link.node.allowed_ips or link.node.addresses, link.wg_endpoint,
                       KEEPALIVE_SECONDS) for link in self.peers.values()]

    # -- timers ------------------------------------------------------------------------------
    def tick(self) -> None:
        now = self.clock()
        for link in list(self.peers.values()):
            self._run(link, link.path.tick(now))

    def _run(self, link: PeerLink, actions: list[Any]) -> None:
        for act in actions:
            if isinstance(act, SendPing):
                self._send_disco_udp(link, act.addr, Ping(act.tx_id))
            elif isinstance(act, SendCallMeMaybe):
                eps = []
                for text in self.my_endpoints:
                    with contextlib.suppress(ValueError):
                        eps.append(Endpoint.parse(text))
                self._send_disco_derp(link, CallMeMaybe(tuple(eps)))
            elif isinstance(act, UseDirect):
                link.direct = act.addr
                link.switches.append((self.clock(), f"direct {act.addr}"))
                log.info("peer %s: direct via %s (%.1f ms)", link.node.name, link.wg_endpoint, act.latency * 1000)
            elif isinstance(act, UseRelay):
                link.direct = None
                link.switches.append((self.clock(), "relay"))
                log.info("peer %s: back to DERP: %s", link.node.name, act.reason)

    # -- disco -------------------------------------------------------------------------------
    def _send_disco_udp(self, link: PeerLink, addr: Endpoint, msg: disco.Message) -> None:
        if self._disco is None or link.node.disco_key is None:
            return
        pkt = disco.seal_packet(self.disco_key, link.node.disco_key, msg)
        self._disco.sendto(pkt, (addr.ip, addr.port))

    def _send_disco_derp(self, link: PeerLink, msg: disco.Message) -> None:
        if link.node.disco_key is None:
            return
        pkt = disco.seal_packet(self.disco_key, link.node.disco_key, msg)
        self.derp.send(link.node.home_derp, link.node.node_key, pkt)

    def _peer_by_disco(self, key: DiscoPublicKey) -> PeerLink | None:
        for link in self.peers.values():
            if link.node.disco_key == key:
                return link
        return None

    def _peer_by_node_key(self, key: NodePublicKey) -> PeerLink | None:
        for link in self.peers.values():
            if link.node.node_key == key:
                return link
        return None

    def _on_disco_datagram(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if is_stun(data):
            self._on_stun(data)
            return
        if not disco.is_disco(data):
            return
        try:
            sender, msg = disco.open_packet(self.disco_key, data)
        except DiscoError as err:
            log.debug("disco from %s dropped: %s", addr[0], err)
            return
        link = self._peer_by_disco(sender)
        if link is None:
            return  # not a peer in our netmap: never answer strangers
        src = Endpoint(addr[0], addr[1])
        now = self.clock()
        if isinstance(msg, Ping):
            self._send_disco_udp(link, src, Pong(msg.tx_id, src))
            self._run(link, link.path.on_ping(now, src))
        elif isinstance(msg, Pong):
            waiter = self._ping_waiters.pop(msg.tx_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(now)
            self._run(link, link.path.on_pong(now, msg.tx_id))
        # CallMeMaybe is only valid over DERP

    def on_derp_packet(self, src: NodePublicKey, data: bytes) -> None:
        """A packet DERP delivered from `src`: disco for us, or WireGuard data for the interface."""
        link = self._peer_by_node_key(src)
        if link is None:
            return
        if disco.is_disco(data):
            try:
                sender, msg = disco.open_packet(self.disco_key, data)
            except DiscoError as err:
                log.debug("disco over DERP from %s dropped: %s", src.short(), err)
                return
            if sender != link.node.disco_key:
                return
            if isinstance(msg, CallMeMaybe):
                self._run(link, link.path.on_call_me_maybe(
                    self.clock(), disco_candidates(str(ep) for ep in msg.endpoints)))
            return
        if link.relay is not None:
            link.relay.sendto(data, ("127.0.0.1", self.wg_port))

    def _on_relay_datagram(self, nid: int, data: bytes, addr: tuple[Any, ...]) -> None:
        link = self.peers.get(nid)
        if link is None or addr[1] != self.wg_port:
            return  # only WireGuard may send through a relay socket
        self.derp.send(link.node.home_derp, link.node.node_key, data)

    # -- on-demand probes (local API) -----------------------------------------------------------
    async def disco_ping(self, nid: int, timeout: float = 2.0) -> tuple[float | None, str]:
        """One disco ping to the peer's direct address (if any): (round trip seconds or None, path)."""
        link = self.peers[nid]
        if link.direct is None or self._disco is None:
            return None, link.path_text()
        tx = os.urandom(disco.TX_ID_LEN)
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._ping_waiters[tx] = fut
        sent = self.clock()
        self._send_disco_udp(link, link.direct, Ping(tx))
        try:
            got = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return None, link.path_text()
        finally:
            self._ping_waiters.pop(tx, None)
        return got - sent, link.path_text()

    # -- STUN from the disco socket ---------------------------------------------------------------
    def _on_stun(self, data: bytes) -> None:
        try:
            resp = parse_response(data)
        except StunParseError:
            return
        fut = self._stun_waiters.pop(resp.txid, None)
        if fut is not None and not fut.done():
            fut.set_result((str(resp.ip), resp.port))

    async def stun(self, host: str, port: int, timeout: float = 2.0) -> tuple[str, int, float]:
        """Our disco socket's reflexive address as a STUN server sees it, and the round trip time."""
        if self._disco is None:
            raise RuntimeError("magicsock not started")
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM)
        addr = infos[0][4]
        tx = new_transaction_id()
        fut: asyncio.Future[tuple[str, int]] = loop.create_future()
        self._stun_waiters[tx] = fut
        sent = loop.time()
        try:
            for _ in range(3):
                self._disco.sendto(build_request(tx), (addr[0], addr[1]))
                done, _ = await asyncio.wait({fut}, timeout=timeout / 3)
                if done:
                    ip, p = fut.result()
                    return ip, p, loop.time() - sent
            raise TimeoutError(f"no STUN answer from {host}:{port}")
        finally:
            self._stun_waiters.pop(tx, None)
