"""The node agent daemon: registration, control link, WireGuard, paths, and the services around them.

`Agent(cfg).run()` brings the node up and keeps it up until cancelled (SIGTERM/SIGINT in `run_agent`):

1. keys: machine key (kept), node key (registration), disco key (per start); register with control;
2. WireGuard interface up with the node key and mesh addresses (reused if a crash left it);
3. the disco socket (port + 1), DERP connections, per-peer relay sockets (`magicsock`, `derplink`);
4. loops: the control map stream (reconnects with backoff and jitter; the mesh keeps running on the
   last netmap meanwhile), a 0.5 s path tick that turns path decisions into `wg set` diffs, and an
   endpoint loop (local addresses + STUN through the disco socket, home DERP by latency) that tells
   control when they change; node key rotation on demand and when expiry is near;
5. services (MagicDNS, packet filter, local API) fed from the netmap through `Services`.

It implements the local API's `AgentBackend` (status, ping, netcheck, rotate_node_key).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import random
import re
import signal
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from ..control.client import ControlClient, ControlError, NetMap, NetMapState
from ..control.errors import ControlHTTPError, ControlKeyMismatchError, MapSequenceError
from ..keys import NodePublicKey
from ..wire import MapRequest, Node
from . import identity
from .command import SubprocessRunner
from .config import AgentConfig
from .derplink import DerpPool
from .errors import AgentError, RegistrationError, WireGuardError
from .localapi import PeerNotFoundError
from .magicsock import MagicSock
from .netcheck import NetcheckReport, run_netcheck
from .services import Services
from .wgbackend import PeerStats, WireGuardInterface
from .wgconfig import SetPeer, WgPeer, diff_peers, reconcile_view

__all__ = ["Agent", "run_agent"]

log = logging.getLogger(__name__)

TICK = 0.5
RECONCILE_EVERY = 2.0
ENDPOINT_REFRESH = 20.0
BACKOFF_INITIAL, BACKOFF_MAX = 1.0, 30.0
ROTATE_BEFORE_EXPIRY = timedelta(days=1)
_KICK_PORT = 9  # discard: nothing answers, the packet only has to enter the tunnel


class Agent:
    def __init__(self, cfg: AgentConfig, *, enable_services: bool = True) -> None:
        self.cfg = cfg
        self.ident = identity.load_identity(cfg)
        self.client = ControlClient(cfg.control_url, cfg.control_key, self.ident.machine)
        self.runner = SubprocessRunner()
        self.wg = WireGuardInterface(cfg.interface, cfg.port, cfg.backend, self.runner,
                                     pid_file=cfg.state_dir / f"wireguard-go.{cfg.interface}.pid")
        self.state = NetMapState()
        self.netmap: NetMap | None = None
        self.self_node: Node | None = None
        self.control_connected = False
        self.control_reconnects = 0
        self.endpoints: tuple[str, ...] = ()
        self._reported: tuple[tuple[str, ...], int] | None = None
        self.home_derp = 0
        self.last_netcheck: NetcheckReport | None = None
        self.stats: dict[NodePublicKey, PeerStats] = {}
        self._stream_restart = asyncio.Event()
        self._report_now = asyncio.Event()
        self._rotating = asyncio.Lock()
        self.derp: DerpPool | None = None
        self.msock: MagicSock | None = None
        self.services = Services(cfg, self) if enable_services else None
        self._rng = random.Random()

    # -- start / stop ------------------------------------------------------------------------
    async def _register_until_done(self) -> None:
        backoff = BACKOFF_INITIAL
        while True:
            try:
                await self.client.fetch_control_key()
                res = await identity.register(self.cfg, self.ident, self.client)
                self.self_node = res.node
                return
            except (ControlKeyMismatchError, RegistrationError):
                raise
            except ControlHTTPError as err:
                if err.status in (401, 403):
                    raise RegistrationError(str(err)) from None
                log.warning("control: %s; retrying in %.0f s", err, backoff)
            except ControlError as err:
                log.warning("control: %s; retrying in %.0f s", err, backoff)
            await asyncio.sleep(self._rng.uniform(0.5, 1.0) * backoff)
            backoff = min(BACKOFF_MAX, backoff * 2)

    async def run(self) -> None:
        await self._register_until_done()
        node_key = self.ident.node
        assert node_key is not None and self.self_node is not None
        await self.wg.up(node_key, self.self_node.addresses)
        self.derp = DerpPool(node_key, self._on_derp_packet)
        self.msock = MagicSock(self.ident.disco, self.cfg.port, self.cfg.disco_port, self.derp)
        await self.msock.start()
        if self.services is not None:
            await self.services.start()
        tasks = [asyncio.create_task(c, name=n) for c, n in (
            (self._control_loop(), "control"), (self._tick_loop(), "paths"), (self._endpoint_loop(), "endpoints"))]
        log.info("agent: up as %s %s on %s (%s WireGuard)", self.self_node.name,
                 ",".join(self.self_node.addresses), self.cfg.interface, self.wg.kind)
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            await self.stop()

    async def stop(self) -> None:
        if self.services is not None:
            await self.services.stop()
        if self.msock is not None:
            self.msock.close()
        if self.derp is not None:
            await self.derp.close()
        await self.wg.down()
        await self.client.aclose()
        log.info("agent: stopped; %s removed", self.cfg.interface)

    def _on_derp_packet(self, src: Any, data: bytes) -> None:
        if self.msock is not None:
            self.msock.on_derp_packet(src, data)

    # -- control link ------------------------------------------------------------------------
    def _map_request(self, stream: bool) -> MapRequest:
        assert self.ident.node is not None
        return MapRequest(node_key=self.ident.node.public_key(), disco_key=self.ident.disco.public_key(),
                          endpoints=self.endpoints, home_derp=self.home_derp,
                          hostinfo=identity.hostinfo(self.cfg), stream=stream)

    async def _control_loop(self) -> None:
        backoff = BACKOFF_INITIAL
        while True:
            self._stream_restart.clear()
            stream_task = asyncio.create_task(self._one_stream())
            restart_task = asyncio.create_task(self._stream_restart.wait())
            done, _ = await asyncio.wait({stream_task, restart_task}, return_when=asyncio.FIRST_COMPLETED)
            for t in (stream_task, restart_task):
                if not t.done():
                    t.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await t
            if restart_task in done:
                continue  # node key changed: new stream at once
            err = stream_task.exception() if not stream_task.cancelled() else None
            if self.control_connected:
                backoff = BACKOFF_INITIAL
            self.control_connected = False
            if isinstance(err, ControlHTTPError) and err.status in (401, 403):
                log.warning("control: map refused (%s); re-registering", err)
                with contextlib.suppress(ControlError, AgentError):
                    await self._rereg()
            elif err is not None and not isinstance(err, ControlError):
                raise err
            else:
                log.warning("control: link down (%s); keeping the last netmap, retry in ≤%.0f s", err, backoff)
            await asyncio.sleep(self._rng.uniform(0.5, 1.0) * backoff)
            backoff = min(BACKOFF_MAX, backoff * 2)
            self.control_reconnects += 1

    async def _rereg(self) -> None:
        res = await identity.register(self.cfg, self.ident, self.client)
        if res.node is not None:
            self.self_node = res.node
        await self._key_changed()

    async def _one_stream(self) -> None:
        self.state.reset()
        request = self._map_request(stream=True)
        async for frame in self.client.map_stream(request):
            try:
                netmap = self.state.apply(frame)
            except MapSequenceError as err:
                raise ControlError(f"map stream out of order: {err}") from None
            if not self.control_connected:
                log.info("control: map stream up (seq %d)", frame.seq)
                self._reported = (request.endpoints, request.home_derp)  # the stream request carried them
            self.control_connected = True
            if not frame.keep_alive:
                try:
                    await self._apply_netmap(netmap)
                except WireGuardError as err:
                    # e.g. one `wg set` failed: keep the link and the interface; the next netmap (or the
                    # next reconcile) applies the diff again instead of the agent exiting and dropping mesh0
                    log.warning("agent: could not apply netmap seq %d: %s", frame.seq, err)

    async def _apply_netmap(self, netmap: NetMap) -> None:
        self.netmap, self.self_node = netmap, netmap.self_node
        assert self.msock is not None and self.derp is not None
        if netmap.derp_map is not None:
            self.derp.derp_map = netmap.derp_map
            if self.home_derp == 0 or self.home_derp not in netmap.derp_map.regions:
                self.home_derp = self.cfg.derp_home or min(netmap.derp_map.regions, default=0)
                self._report_now.set()  # peers relay to us through our home region: tell control now
            await self.derp.set_home(self.home_derp)
        await self.msock.set_peers(netmap.peers.values())
        await self._sync_wireguard()
        if self.services is not None:
            await self.services.update(netmap)
        await self._maybe_rotate_for_expiry()

    async def _maybe_rotate_for_expiry(self) -> None:
        node = self.self_node
        if node is None or node.key_expiry is None or self._rotating.locked():
            return
        if identity.rotation_due(node.key_expiry, datetime.now(UTC), ROTATE_BEFORE_EXPIRY):
            log.info("agent: node key expires %s; rotating", node.key_expiry.isoformat())
            asyncio.get_running_loop().create_task(self.rotate_node_key())

    # -- data plane ----------------------------------------------------------------------------
    async def _sync_wireguard(self) -> None:
        assert self.msock is not None
        changes = diff_peers(self.wg.peers, self.msock.wg_peers())
        if changes:
            await self.wg.apply(changes)
            self._kick([c.public_key for c in changes if isinstance(c, SetPeer) and c.endpoint is not None
                        and not c.endpoint.startswith("127.0.0.1:")])

    def _kick(self, keys: list[NodePublicKey]) -> None:
        """Make WireGuard send to peers that just went direct. Disco runs on its own socket, so the NAT
        mapping WireGuard's socket needs exists only once WireGuard itself sends; a datagram into the
        tunnel starts a handshake at once (from both sides, since both switch) instead of waiting for
        traffic or the 25 s keepalive."""
        assert self.msock is not None
        want = set(keys)
        for link in self.msock.peers.values():
            if link.node.node_key not in want:
                continue
            for addr in link.node.addresses:
                ip = addr.split("/")[0]
                if ":" in ip:
                    continue
                with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.setblocking(False)
                    s.sendto(b"meshctl: path check", (ip, _KICK_PORT))

    async def _tick_loop(self) -> None:
        last_reconcile = 0.0
        while True:
            await asyncio.sleep(TICK)
            assert self.msock is not None
            self.msock.tick()
            now = time.monotonic()
            try:
                if now - last_reconcile >= RECONCILE_EVERY:
                    self.stats = await self.wg.dump()
                    self.wg.peers = reconcile_view(self.wg.peers, {
                        k: WgPeer(k, st.allowed_ips, st.endpoint, st.keepalive) for k, st in self.stats.items()})
                    last_reconcile = now
                await self._sync_wireguard()
            except AgentError as err:
                log.warning("wireguard: %s", err)

    async def _endpoint_loop(self) -> None:
        while True:
            try:
                await self._refresh_endpoints()
            except (ControlError, OSError) as err:
                log.info("endpoints: could not report to control (%s)", err)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._report_now.wait(), ENDPOINT_REFRESH if self.endpoints else 2.0)
            self._report_now.clear()

    async def _refresh_endpoints(self) -> None:
        assert self.msock is not None and self.derp is not None
        eps = await self._local_endpoints()
        report = await self._netcheck()
        if report is not None:
            for p in report.probes:
                if p.reflexive is not None and p.reflexive[1] > 1:
                    # the disco socket's mapping; WireGuard's port is one below (NAT keeping the offset)
                    eps.append(f"{p.reflexive[0]}:{p.reflexive[1] - 1}")
            if self.cfg.derp_home is None and report.preferred_region:
                self.home_derp = report.preferred_region
                await self.derp.set_home(self.home_derp)
        new = tuple(dict.fromkeys(eps))
        self.msock.my_endpoints = new
        self.endpoints = new
        if self.netmap is None:
            return  # not streaming yet: the map request that opens the stream carries them
        if (new, self.home_derp) != self._reported:
            req = self._map_request(stream=False)
            await self.client.update(req)
            # what was sent, not what holds now: a netmap may have moved the home region meanwhile
            self._reported = (req.endpoints, req.home_derp)
            log.info("endpoints: reported %s, home DERP %d", ",".join(req.endpoints) or "none", req.home_derp)
            if (self.endpoints, self.home_derp) != self._reported:
                self._report_now.set()

    async def _local_endpoints(self) -> list[str]:
        _, out = await self.runner.run(["ip", "-j", "-4", "addr", "show"], check=False)
        eps = []
        try:
            links = json.loads(out or "[]")
        except ValueError:
            links = []
        for link in links:
            if link.get("ifname") in ("lo", self.cfg.interface):
                continue
            for a in link.get("addr_info", []):
                ip = ipaddress.ip_address(a.get("local", "0.0.0.0"))
                if ip.is_loopback or ip.is_link_local or ip in ipaddress.ip_network("100.64.0.0/10"):
                    continue
                eps.append(f"{ip}:{self.cfg.port}")
        return eps

    async def _netcheck(self) -> NetcheckReport | None:
        if self.netmap is None or self.netmap.derp_map is None or self.msock is None:
            return None
        msock = self.msock

        async def prober(host: str, port: int, timeout: float) -> tuple[tuple[str, int], float]:
            ip, p, rtt = await msock.stun(host, port, timeout)
            return (ip, p), rtt

        self.last_netcheck = await run_netcheck(self.netmap.derp_map, prober, timeout=2.0)
        return self.last_netcheck

    # -- rotation ------------------------------------------------------------------------------
    async def _key_changed(self) -> None:
        key = self.ident.node
        assert key is not None
        if self.wg.kind is not None:
            await self.wg.set_private_key(key)
        if self.derp is not None:
            await self.derp.set_private_key(key)
        self._stream_restart.set()

    # -- AgentBackend (local API) -------------------------------------------------------------------
    async def rotate_node_key(self) -> dict[str, Any]:
        async with self._rotating:
            old = self.ident.node
            assert old is not None
            res = await identity.rotate(self.cfg, self.ident, self.client)
            if res.node is not None:
                self.self_node = res.node
            await self._key_changed()
            assert self.ident.node is not None
            expiry = res.node.key_expiry if res.node else None
            return {"oldNodeKey": old.public_key().short(), "newNodeKey": self.ident.node.public_key().short(),
                    "keyExpiry": int(expiry.timestamp()) if expiry else None}

    def status(self) -> dict[str, Any]:
        me = self.self_node
        peers = []
        stats = self.stats
        if self.msock is not None:
            for link in self.msock.peers.values():
                n = link.node
                s = stats.get(n.node_key)
                peers.append({
                    "name": n.name, "fqdn": n.fqdn, "addresses": list(n.addresses), "nodeKey": n.node_key.short(),
                    "path": link.path_text(),
                    "endpoint": (s.endpoint if s and s.endpoint else link.wg_endpoint) if link.direct else None,
                    "lastHandshake": s.last_handshake if s else None, "rxBytes": s.rx_bytes if s else 0,
                    "txBytes": s.tx_bytes if s else 0, "online": n.online,
                    "latencyMs": round(link.path.latency * 1000, 3) if link.direct and link.path.latency else None,
                })
        return {
            "self": {
                "name": me.name if me else "", "fqdn": me.fqdn if me else "",
                "addresses": list(me.addresses) if me else [],
                "nodeKey": self.ident.node.public_key().short() if self.ident.node else "",
                "keyExpiry": int(me.key_expiry.timestamp()) if me and me.key_expiry else None,
                "online": True, "controlConnected": self.control_connected,
                "homeDerp": self.home_derp or None, "endpoints": list(self.endpoints),
            },
            "peers": sorted(peers, key=lambda p: str(p["name"])),
        }

    def _find_peer(self, peer: str) -> int:
        if self.msock is not None:
            for nid, link in self.msock.peers.items():
                n = link.node
                plain = {a.split("/")[0] for a in n.addresses}
                if peer in (n.name, n.fqdn, n.fqdn.rstrip(".")) or peer in plain:
                    return nid
        raise PeerNotFoundError(peer)

    async def ping(self, peer: str, count: int) -> dict[str, Any]:
        nid = self._find_peer(peer)
        assert self.msock is not None
        link = self.msock.peers[nid]
        addr = link.node.addresses[0].split("/")[0]
        results = []
        for seq in range(count):
            disco_rtt, _ = await self.msock.disco_ping(nid)
            icmp = await self._icmp(addr)
            results.append({"seq": seq, "discoMs": None if disco_rtt is None else round(disco_rtt * 1000, 3),
                            "icmpMs": icmp})
        return {"peer": link.node.name, "address": addr, "path": link.path_text(),
                "endpoint": link.wg_endpoint if link.direct else None, "sent": count, "results": results}

    async def _icmp(self, addr: str) -> float | None:
        code, out = await self.runner.run(["ping", "-n", "-c", "1", "-W", "2", addr], check=False)
        m = re.search(r"time[=<]([\d.]+) ms", out)
        return float(m.group(1)) if code == 0 and m else None

    async def netcheck(self) -> dict[str, Any]:
        report = await self._netcheck()
        if report is None:
            raise AgentError("no DERP map yet: the agent has not received a netmap from control")
        return report.to_json()


async def run_agent(cfg: AgentConfig, *, enable_services: bool = True) -> None:
    """Run until SIGTERM or SIGINT, then stop cleanly (interface removed, DNS restored)."""
    agent = Agent(cfg, enable_services=enable_services)
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, main.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await agent.run()
