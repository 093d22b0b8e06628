"""The STUN server shell: an asyncio datagram protocol around the pure codec in `message`.

Answers every well-formed binding request (plain RFC 5389 or Tailscale-style) with the source
address it came from, only to that address, and never with more than `response_allowed` bytes.
Malformed datagrams are counted by error class and dropped; nothing is rate-limited (derper advice).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections import Counter
from typing import Any, cast

from .errors import StunParseError
from .message import build_response, parse_request, response_allowed

__all__ = ["StunServer", "start_stun_server"]

log = logging.getLogger("meshctl.stun")


class StunServer(asyncio.DatagramProtocol):
    """Counts: `answered`, and `dropped[reason]` (error class name, or "amplification")."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.answered = 0
        self.dropped: Counter[str] = Counter()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (3.11's selector datagram transport does not subclass DatagramTransport; it has its methods)
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            req = parse_request(data)
        except StunParseError as e:
            self.dropped[type(e).__name__] += 1
            return
        host, port = addr[0], addr[1]
        ip = ipaddress.ip_address(host.split("%", 1)[0])
        resp = build_response(req.txid, ip, port)
        if not response_allowed(len(data), len(resp)):
            self.dropped["amplification"] += 1
            return
        assert self.transport is not None
        self.transport.sendto(resp, addr)
        self.answered += 1

    def error_received(self, exc: Exception) -> None:  # ICMP errors from earlier replies; keep serving
        self.dropped["socket_error"] += 1

    @property
    def local_address(self) -> tuple[str, int]:
        assert self.transport is not None
        sockname = self.transport.get_extra_info("sockname")
        return str(sockname[0]), int(sockname[1])

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def start_stun_server(host: str, port: int) -> StunServer:
    """Bind UDP host:port (port 0 picks one) and start answering."""
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(StunServer, local_addr=(host, port))
    return proto
