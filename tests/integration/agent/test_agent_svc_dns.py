"""MagicDNS bound on 100.100.100.100:53 in a test-made namespace, queried with real `dig` and dnspython,
forwarding outside names to a stub upstream resolver on the namespace's loopback."""

from __future__ import annotations

import asyncio
import shutil
import socket
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

import dns.message
import dns.rcode
import dns.rrset
import pytest

from meshctl.agent.dns import DnsConfigError, MagicDNS
from meshctl.agent.resolvconf import HostDns

from .test_agent_svc_netns import LoopInNetns, make_netns, needs_root, run_in, sh, unique

pytestmark = [pytest.mark.integration, pytest.mark.root, needs_root]

UPSTREAM = ("127.0.0.1", 5353)


class StubUpstream(asyncio.DatagramProtocol):
    """An upstream resolver that knows one name, and remembers every name it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.transport: asyncio.DatagramTransport | None = None

    def answer(self, wire: bytes) -> bytes:
        query = dns.message.from_wire(wire)
        name = query.question[0].name.to_text()
        self.asked.append(name)
        response = dns.message.make_response(query)
        if name == "example.test.":
            response.answer.append(dns.rrset.from_text(name, 300, "IN", "A", "192.0.2.99"))
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        wire_out: bytes = response.to_wire()
        return wire_out

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(self.answer(data), addr)

    async def serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
        answer = self.answer(await reader.readexactly(length))
        writer.write(struct.pack("!H", len(answer)) + answer)
        await writer.drain()
        writer.close()


@pytest.fixture
def netns() -> Iterator[str]:
    yield from make_netns()


@pytest.fixture
def resolver(netns: str) -> Iterator[tuple[str, MagicDNS, StubUpstream, LoopInNetns]]:
    # By default the resolver itself puts 100.100.100.100/32 on the namespace's loopback while it serves.
    loop = LoopInNetns(netns)
    upstream = StubUpstream()
    magic = MagicDNS("corp.mesh", [UPSTREAM], forward_timeout=0.5)
    servers: list[asyncio.AbstractServer] = []

    async def start() -> None:
        running = asyncio.get_running_loop()
        await running.create_datagram_endpoint(lambda: upstream, local_addr=UPSTREAM)
        servers.append(await asyncio.start_server(upstream.serve_tcp, *UPSTREAM))
        magic.update_names({"web": ["100.64.0.2", "fd7a:115c:a1e0::2"], "alpha": ["100.64.0.1"]})
        await magic.start()

    async def stop() -> None:
        await magic.close()
        for server in servers:
            server.close()
        if upstream.transport is not None:
            upstream.transport.close()

    try:
        loop.run(start())
        yield netns, magic, upstream, loop
    finally:
        try:
            loop.run(stop())
        finally:
            loop.close()


def dig(netns: str, *args: str) -> str:
    return sh("ip", "netns", "exec", netns, "dig", "@100.100.100.100", "+time=2", "+tries=1", *args).stdout


needs_dig = pytest.mark.skipif(shutil.which("dig") is None, reason="dig (bind9-dnsutils) is not installed")


@needs_dig
def test_dig_resolves_mesh_names_over_udp_and_tcp(resolver: tuple[str, MagicDNS, StubUpstream, LoopInNetns]) -> None:
    netns, _, upstream, _ = resolver
    assert "inet 100.100.100.100/32" in sh("ip", "-n", netns, "addr", "show", "dev", "lo").stdout
    assert dig(netns, "+short", "web.corp.mesh", "A").split() == ["100.64.0.2"]
    assert dig(netns, "+short", "+tcp", "web.corp.mesh", "AAAA").split() == ["fd7a:115c:a1e0::2"]
    assert "status: NXDOMAIN" in dig(netns, "ghost.corp.mesh", "A")
    assert upstream.asked == []  # mesh names never leave the host


@needs_dig
def test_dig_gets_outside_names_from_the_previous_upstream(
    resolver: tuple[str, MagicDNS, StubUpstream, LoopInNetns]
) -> None:
    netns, _, upstream, _ = resolver
    assert dig(netns, "+short", "example.test", "A").split() == ["192.0.2.99"]
    assert dig(netns, "+short", "+tcp", "example.test", "A").split() == ["192.0.2.99"]
    assert "status: NXDOMAIN" in dig(netns, "missing.test", "A")
    assert upstream.asked == ["example.test.", "example.test.", "missing.test."]


def test_name_table_updates_take_effect_for_the_next_query(
    resolver: tuple[str, MagicDNS, StubUpstream, LoopInNetns]
) -> None:
    netns, magic, _, loop = resolver

    async def rename() -> None:
        magic.update_names({"web2": ["100.64.0.9"]})

    def query(name: str) -> dns.message.Message:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(3)
            sock.sendto(dns.message.make_query(name, "A").to_wire(), ("100.100.100.100", 53))
            return dns.message.from_wire(sock.recv(4096))

    assert run_in(netns, lambda: query("web.corp.mesh")).rcode() == dns.rcode.NOERROR
    loop.run(rename())
    assert run_in(netns, lambda: query("web.corp.mesh")).rcode() == dns.rcode.NXDOMAIN
    renamed = run_in(netns, lambda: query("WEB2.corp.mesh"))
    assert [rd.to_text() for rrset in renamed.answer for rd in rrset] == ["100.64.0.9"]


def test_dead_upstream_gives_servfail_not_silence(
    resolver: tuple[str, MagicDNS, StubUpstream, LoopInNetns]
) -> None:
    netns, magic, _, loop = resolver

    async def point_at_nothing() -> None:
        magic.set_upstreams([("127.0.0.1", 5399)])

    loop.run(point_at_nothing())

    def query() -> dns.message.Message:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.sendto(dns.message.make_query("example.test", "A").to_wire(), ("100.100.100.100", 53))
            return dns.message.from_wire(sock.recv(4096))

    assert run_in(netns, query).rcode() == dns.rcode.SERVFAIL


def test_the_resolver_claims_its_address_on_the_mesh_interface_and_gives_it_back(netns: str) -> None:
    mesh_if = unique("svcm")
    peer_if = unique("svcp")
    # (no dummy module on this kernel: one end of a veth pair stands in for the mesh interface)
    sh("ip", "-n", netns, "link", "add", mesh_if, "type", "veth", "peer", "name", peer_if)
    sh("ip", "-n", netns, "link", "set", mesh_if, "up")
    sh("ip", "-n", netns, "link", "set", peer_if, "up")
    loop = LoopInNetns(netns)
    magic = MagicDNS("corp.mesh", [], claim_on=mesh_if)

    async def start() -> None:
        magic.update_names({"web": ["100.64.0.2"]})
        await magic.start()

    def query() -> dns.message.Message:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(3)
            sock.sendto(dns.message.make_query("web.corp.mesh", "A").to_wire(), ("100.100.100.100", 53))
            return dns.message.from_wire(sock.recv(4096))

    try:
        loop.run(start())
        assert "inet 100.100.100.100/32" in sh("ip", "-n", netns, "addr", "show", "dev", mesh_if).stdout
        assert [rd.to_text() for rrset in run_in(netns, query).answer for rd in rrset] == ["100.64.0.2"]
    finally:
        loop.run(magic.close())
        loop.close()
    assert "100.100.100.100" not in sh("ip", "-n", netns, "addr", "show", "dev", mesh_if).stdout


IP_UNICAST_IF = 50  # linux/in.h


def test_resolved_mode_makes_magicdns_reachable_for_per_link_queries(
    resolver: tuple[str, MagicDNS, StubUpstream, LoopInNetns]
) -> None:
    """systemd-resolved sends a link's queries with IP_UNICAST_IF set to that link; with 100.100.100.100
    only on lo they would be routed into the tunnel. resolvectl itself is not on this machine: its calls
    are recorded, the `ip` calls run for real in the namespace."""
    netns, _, _, _ = resolver
    mesh_if, peer_if = unique("svcm"), unique("svcp")
    sh("ip", "-n", netns, "link", "add", mesh_if, "type", "veth", "peer", "name", peer_if)
    for dev in (mesh_if, peer_if):
        sh("ip", "-n", netns, "link", "set", dev, "up")
    sh("ip", "-n", netns, "route", "add", "100.64.0.0/10", "dev", mesh_if)  # as the agent routes the mesh
    recorded: list[list[str]] = []

    def runner(argv: Sequence[str]) -> None:
        if argv[0] == "ip":
            sh("ip", "-n", netns, *argv[1:])
        else:
            recorded.append(list(argv))

    def per_link_query() -> dns.message.Message | None:
        index = socket.if_nametoindex(mesh_if)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.IPPROTO_IP, IP_UNICAST_IF, struct.pack("!I", index))
            sock.settimeout(1)
            sock.sendto(dns.message.make_query("web.corp.mesh", "A").to_wire(), ("100.100.100.100", 53))
            try:
                return dns.message.from_wire(sock.recv(4096))
            except TimeoutError:
                return None

    assert run_in(netns, per_link_query) is None  # MagicDNS on lo only: lost in the tunnel route
    host_dns = HostDns("corp.mesh", mesh_if, root=Path("/nonexistent"), resolved=True, runner=runner)
    host_dns.apply()
    assert recorded[0] == ["resolvectl", "dns", mesh_if, "100.100.100.100"]
    answer = run_in(netns, per_link_query)
    assert answer is not None
    assert [rd.to_text() for rrset in answer.answer for rd in rrset] == ["100.64.0.2"]
    host_dns.restore()
    assert "100.100.100.100" not in sh("ip", "-n", netns, "addr", "show", "dev", mesh_if).stdout


@needs_dig
def test_a_second_resolver_on_the_address_fails_cleanly_and_the_first_keeps_serving(
    resolver: tuple[str, MagicDNS, StubUpstream, LoopInNetns]
) -> None:
    netns, _, _, loop = resolver
    second = MagicDNS("other.mesh", [])
    with pytest.raises(DnsConfigError, match=r"cannot bind MagicDNS on 100.100.100.100:53: Address already in use"):
        loop.run(second.start())
    assert "inet 100.100.100.100/32" in sh("ip", "-n", netns, "addr", "show", "dev", "lo").stdout
    assert dig(netns, "+short", "web.corp.mesh", "A").split() == ["100.64.0.2"]
