"""MagicDNS: the agent's resolver on 100.100.100.100:53 (UDP and TCP).

Names `<name>.<domain>` of the node itself and its peers are answered from a name table the daemon
replaces on every netmap (`MagicDNS.update_names`), with no traffic leaving the host; unknown names
inside the mesh domain get NXDOMAIN; everything else is forwarded to the host's previous upstream
resolvers (`meshctl.agent.resolvconf.upstream_resolvers` reads them before the agent takes over).

`decide(query, table)` is the pure core: query bytes and a table in, a `Reply` (bytes) or a
`Forward` decision out. `MagicDNS` is the asyncio shell around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset

from ..errors import MeshctlError

__all__ = [
    "MAGICDNS_ADDRESS",
    "NAME_TTL",
    "DnsConfigError",
    "Forward",
    "MagicDNS",
    "NameTable",
    "Reply",
    "decide",
]

log = logging.getLogger(__name__)

MAGICDNS_ADDRESS = "100.100.100.100"
#: seconds a mesh answer may be cached; Tailscale's MagicDNS uses the same 10 minutes
NAME_TTL = 600
_IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
_MAX_INFLIGHT = 256

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Upstream = tuple[str, int]


class DnsConfigError(MeshctlError):
    """A name table or resolver setting is invalid."""


def _label_name(text: str) -> dns.name.Name:
    try:
        return dns.name.from_text(text.strip().rstrip(".").lower() + ".")
    except dns.exception.DNSException as err:
        raise DnsConfigError(f"{text!r} is not a valid DNS name: {err}") from None


@dataclass(frozen=True)
class NameTable:
    """Mesh names (absolute, lower case) to addresses, under one domain."""

    domain: dns.name.Name
    names: Mapping[dns.name.Name, tuple[IPAddress, ...]] = field(default_factory=dict)
    reverse: Mapping[dns.name.Name, dns.name.Name] = field(default_factory=dict)
    rejected: tuple[str, ...] = ()  # entries skipped by a lenient build, each with its reason

    @classmethod
    def build(cls, domain: str, mapping: Mapping[str, Iterable[str]], *, lenient: bool = False) -> NameTable:
        """`mapping` keys are bare names (`web`) or FQDNs under `domain`; values are IP address strings.

        Strict (the default) raises on the first bad entry; `lenient` skips it and lists it in
        `rejected`, so one odd peer in a netmap cannot take every other name away.
        """
        origin = _label_name(domain)
        names: dict[dns.name.Name, tuple[IPAddress, ...]] = {}
        reverse: dict[dns.name.Name, dns.name.Name] = {}
        rejected: list[str] = []
        for key, addresses in mapping.items():
            try:
                name, parsed = _entry(origin, key, addresses)
            except DnsConfigError as err:
                if not lenient:
                    raise
                rejected.append(str(err))
                continue
            names[name] = parsed
            for address in parsed:
                reverse[dns.reversename.from_address(str(address))] = name
        return cls(origin, names, reverse, tuple(rejected))

    def is_mesh(self, qname: dns.name.Name) -> bool:
        return qname.is_subdomain(self.domain)


def _entry(origin: dns.name.Name, key: str, addresses: Iterable[str]) -> tuple[dns.name.Name, tuple[IPAddress, ...]]:
    name = _label_name(key)
    if not name.is_subdomain(origin):
        name = dns.name.Name(name.labels[:-1] + origin.labels)
    if name == origin:
        raise DnsConfigError(f"{key!r} names the mesh domain itself, not a node in it")
    try:
        return name, tuple(ipaddress.ip_address(a) for a in addresses)
    except ValueError as err:
        raise DnsConfigError(f"{key!r}: {err}") from None


@dataclass(frozen=True)
class Reply:
    """Send these bytes back to the client."""

    wire: bytes


@dataclass(frozen=True)
class Forward:
    """Pass the query unchanged to the upstream resolvers."""

    qname: str


def _header_only(query: bytes, rcode: dns.rcode.Rcode) -> Reply | None:
    if len(query) < 12:
        return None  # not even a header: nothing to answer
    (qid, flags) = struct.unpack("!HH", query[:4])
    opcode_bits = flags & 0x7800
    return Reply(struct.pack("!HHHHHH", qid, 0x8000 | opcode_bits | 0x0080 | rcode, 0, 0, 0, 0))


def decide(query: bytes, table: NameTable) -> Reply | Forward | None:
    """Answer `query` from `table`, or decide to forward it; None means drop (not a DNS query at all)."""
    try:
        message = dns.message.from_wire(query)
    except dns.message.ShortHeader:
        return None
    except dns.exception.DNSException:
        return _header_only(query, dns.rcode.FORMERR)
    if message.flags & dns.flags.QR:
        return None  # a response sent to a server: ignore rather than echo
    if message.opcode() != dns.opcode.QUERY:
        return _answer(message, dns.rcode.NOTIMP, [])
    if len(message.question) != 1:
        return _answer(message, dns.rcode.FORMERR, [])
    question = message.question[0]
    qname = question.name.canonicalize()
    if question.rdclass != dns.rdataclass.IN:
        return Forward(qname.to_text())
    if qname in table.reverse and question.rdtype in (dns.rdatatype.PTR, dns.rdatatype.ANY):
        rrset = dns.rrset.from_text(question.name, NAME_TTL, "IN", "PTR", table.reverse[qname].to_text())
        return _answer(message, dns.rcode.NOERROR, [rrset], authoritative=True)
    if not table.is_mesh(qname):
        return Forward(qname.to_text())
    addresses = table.names.get(qname)
    if addresses is None:
        rcode = dns.rcode.NOERROR if qname == table.domain else dns.rcode.NXDOMAIN
        return _answer(message, rcode, [], authoritative=True)
    wanted: dict[dns.rdatatype.RdataType, list[IPAddress]] = {
        dns.rdatatype.A: [a for a in addresses if a.version == 4],
        dns.rdatatype.AAAA: [a for a in addresses if a.version == 6],
    }
    rrsets: list[dns.rrset.RRset] = []
    for rdtype, found in wanted.items():
        if found and question.rdtype in (rdtype, dns.rdatatype.ANY):
            texts = [str(a) for a in found]
            rrsets.append(dns.rrset.from_text_list(question.name, NAME_TTL, "IN", rdtype, texts))
    return _answer(message, dns.rcode.NOERROR, rrsets, authoritative=True)  # no rrsets: NODATA


def _answer(
    query: dns.message.Message,
    rcode: dns.rcode.Rcode,
    rrsets: Sequence[dns.rrset.RRset],
    *,
    authoritative: bool = False,
) -> Reply:
    response = dns.message.make_response(query, recursion_available=True)
    response.set_rcode(rcode)
    if authoritative:
        response.flags |= dns.flags.AA
    response.answer.extend(rrsets)
    wire: bytes = response.to_wire()
    return Reply(wire)


def servfail(query: bytes) -> bytes | None:
    """A SERVFAIL for `query` (when every upstream failed), keeping its id and question."""
    try:
        message = dns.message.from_wire(query)
    except dns.exception.DNSException:
        reply = _header_only(query, dns.rcode.SERVFAIL)
        return reply.wire if reply else None
    return _answer(message, dns.rcode.SERVFAIL, []).wire


class _UdpForward(asyncio.DatagramProtocol):
    def __init__(self, qid: bytes) -> None:
        self.qid = qid
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if data[:2] == self.qid and not self.answer.done():
            self.answer.set_result(data)


class MagicDNS:
    """The resolver shell: sockets, forwarding, and the name table the daemon keeps current."""

    def __init__(
        self,
        domain: str,
        upstreams: Sequence[Upstream] = (),
        *,
        address: str = MAGICDNS_ADDRESS,
        port: int = 53,
        forward_timeout: float = 2.0,
        claim_on: str | None = "auto",
    ) -> None:
        """`claim_on`: an interface to put `address` on while serving, so the host's packets to it are
        delivered locally instead of being routed into the tunnel (100.100.100.100 lies inside the mesh
        route 100.64.0.0/10). Pass the mesh interface where systemd-resolved sends per-link DNS out of
        it; "auto" means `lo` for 100.100.100.100 and nothing for any other address; None never claims."""
        if claim_on == "auto":
            claim_on = "lo" if address == MAGICDNS_ADDRESS else None
        self.table = NameTable.build(domain, {})
        self.upstreams: tuple[Upstream, ...] = tuple(upstreams)
        self.address = address
        self.port = port
        self.forward_timeout = forward_timeout
        self.claim_on = claim_on
        self._claimed = False
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def update_names(self, mapping: Mapping[str, Iterable[str]], domain: str | None = None) -> None:
        """Replace the whole table (names → addresses). A bad entry is logged and skipped; a bad domain
        raises DnsConfigError and keeps the previous table."""
        table = NameTable.build(domain if domain is not None else self.table.domain.to_text(), mapping, lenient=True)
        for reason in table.rejected:
            log.warning("MagicDNS: skipping a name: %s", reason)
        self.table = table

    def set_upstreams(self, upstreams: Sequence[Upstream]) -> None:
        self.upstreams = tuple(upstreams)

    def _socket(self, kind: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        sock = socket.socket(family, kind)
        try:
            if kind == socket.SOCK_STREAM:  # (for UDP it would let a second server share the port unseen)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET:
                # Bind even before the daemon has put 100.100.100.100 on an interface.
                sock.setsockopt(socket.IPPROTO_IP, _IP_FREEBIND, 1)
            sock.bind((self.address, self.port))
            sock.setblocking(False)
        except OSError as err:
            sock.close()
            raise DnsConfigError(f"cannot bind MagicDNS on {self.address}:{self.port}: {err.strerror}",
                                 hint="is another DNS server bound there?") from None
        return sock

    async def _ip_addr(self, verb: str) -> str:
        assert self.claim_on is not None
        prefix = "128" if ":" in self.address else "32"
        if verb == "show":
            argv = ["ip", "-o", "addr", "show", "dev", self.claim_on]
        else:
            argv = ["ip", "addr", verb, f"{self.address}/{prefix}", "dev", self.claim_on]
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await proc.communicate()
        if proc.returncode != 0:
            raise DnsConfigError(f"{' '.join(argv)} failed: {stderr.decode(errors='replace').strip()}")
        return stdout.decode(errors="replace")

    async def start(self) -> None:
        """Bind UDP and TCP on address:port (claiming the address first if asked); undone on failure."""
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.claim_on is not None:
            held = f" {self.address}/" in await self._ip_addr("show")
            await self._ip_addr("replace")
            # If binding fails below, give the address back only if we added it: it may belong to a
            # resolver already serving there. Once bound, it is ours (a crash's leftover at most).
            self._claimed = not held
        udp_sock = self._socket(socket.SOCK_DGRAM)
        self._udp, _ = await loop.create_datagram_endpoint(lambda: _UdpServer(self), sock=udp_sock)
        tcp_sock = self._socket(socket.SOCK_STREAM)
        if self.port == 0:  # tests: serve TCP on the port UDP got
            tcp_sock.close()
            self.port = udp_sock.getsockname()[1]
            tcp_sock = self._socket(socket.SOCK_STREAM)
        self._tcp = await asyncio.start_server(self._serve_tcp, sock=tcp_sock)
        self._claimed = self.claim_on is not None

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
            self._tcp = None
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()
        if self._claimed:
            self._claimed = False
            try:
                await self._ip_addr("del")
            except DnsConfigError as err:  # the interface may already be gone with the agent's stop
                log.info("MagicDNS: %s", err)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_datagram(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        decision = decide(data, self.table)
        if isinstance(decision, Reply):
            self._send(decision.wire, addr)
        elif isinstance(decision, Forward):
            if len(self._tasks) >= _MAX_INFLIGHT:
                log.warning("MagicDNS: %d forwards in flight, dropping %s", len(self._tasks), decision.qname)
                return
            self._spawn(self._forward_and_send(data, addr))

    def _send(self, wire: bytes, addr: tuple[str | int, ...]) -> None:
        if self._udp is not None:
            self._udp.sendto(wire, addr)

    async def _forward_and_send(self, query: bytes, addr: tuple[str | int, ...]) -> None:
        answer = await self.forward_udp(query)
        if answer is not None:
            self._send(answer, addr)

    async def forward_udp(self, query: bytes) -> bytes | None:
        """The first upstream answer to `query`, or a SERVFAIL when none answers in time."""
        loop = asyncio.get_running_loop()
        for host, port in self.upstreams:
            transport: asyncio.DatagramTransport | None = None
            try:
                transport, proto = await loop.create_datagram_endpoint(
                    lambda: _UdpForward(query[:2]), remote_addr=(host, port)
                )
                transport.sendto(query)
                return await asyncio.wait_for(proto.answer, self.forward_timeout)
            except (OSError, TimeoutError) as err:
                log.info("MagicDNS: upstream %s:%d failed: %s", host, port, err or "timeout")
            finally:
                if transport is not None:
                    transport.close()
        return servfail(query)

    async def forward_tcp(self, query: bytes) -> bytes | None:
        for host, port in self.upstreams:
            writer: asyncio.StreamWriter | None = None
            try:
                reader, stream = await asyncio.wait_for(asyncio.open_connection(host, port), self.forward_timeout)
                writer = stream
                stream.write(struct.pack("!H", len(query)) + query)
                (length,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), self.forward_timeout))
                return await asyncio.wait_for(reader.readexactly(length), self.forward_timeout)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as err:
                log.info("MagicDNS: upstream %s:%d (tcp) failed: %s", host, port, err or "timeout")
            finally:
                if writer is not None:
                    writer.close()
        return servfail(query)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (length,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 10.0))
                query = await asyncio.wait_for(reader.readexactly(length), 10.0)
                decision = decide(query, self.table)
                if decision is None:
                    return
                answer = decision.wire if isinstance(decision, Reply) else await self.forward_tcp(query)
                if answer is None:
                    return
                writer.write(struct.pack("!H", len(answer)) + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


class _UdpServer(asyncio.DatagramProtocol):
    def __init__(self, resolver: MagicDNS) -> None:
        self.resolver = resolver

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.resolver._on_datagram(data, addr)
