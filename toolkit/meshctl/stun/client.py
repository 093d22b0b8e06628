"""STUN client helpers: learn this socket's reflexive (public) address from a STUN server.

`probe()` (asyncio) and `probe_blocking()` send a Tailscale-style binding request and return
`(ip, port)` as the server saw it. Pass `sock=` to send from an existing UDP socket: the mapped
address is only useful when it is the same socket (and NAT mapping) WireGuard/disco use. An agent
whose UDP socket is owned by an asyncio transport should instead call `message.build_request()` and
demultiplex replies with `message.is_stun()` + `message.parse_response(data, txid)` itself.
"""

from __future__ import annotations

import asyncio
import socket
import time

from .errors import StunParseError, StunTimeoutError
from .message import build_request, new_transaction_id, parse_response

__all__ = ["probe", "probe_blocking"]


def _resolve(host: str, port: int, family: int = 0) -> tuple[int, tuple[str, int]]:
    infos = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM)
    fam, _, _, _, addr = infos[0]
    return fam, (str(addr[0]), int(addr[1]))


def _match(data: bytes, txid: bytes) -> tuple[str, int] | None:
    try:
        resp = parse_response(data, txid)
    except StunParseError:
        return None  # a stray or foreign datagram: keep waiting
    return str(resp.ip), resp.port


async def probe(server_host: str, port: int = 3478, *, sock: socket.socket | None = None,
                timeout: float = 3.0, retries: int = 2) -> tuple[str, int]:
    """Ask a STUN server for our reflexive address; retransmits `retries` times within `timeout`."""
    loop = asyncio.get_running_loop()
    own = sock is None
    family = 0 if sock is None else sock.family
    fam, addr = _resolve(server_host, port, family)
    if sock is None:
        sock = socket.socket(fam, socket.SOCK_DGRAM)
    sock.setblocking(False)
    txid = new_transaction_id()
    request = build_request(txid)
    deadline = loop.time() + timeout
    interval = timeout / (retries + 1)
    try:
        while loop.time() < deadline:
            await loop.sock_sendto(sock, request, addr)
            resend_at = min(deadline, loop.time() + interval)
            while (left := resend_at - loop.time()) > 0:
                try:
                    data, _src = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), left)
                except TimeoutError:
                    break
                got = _match(data, txid)
                if got is not None:
                    return got
        raise StunTimeoutError(f"{server_host}:{port}", timeout)
    finally:
        if own:
            sock.close()


def probe_blocking(server_host: str, port: int = 3478, *, sock: socket.socket | None = None,
                   timeout: float = 3.0) -> tuple[str, int]:
    """Synchronous variant of `probe` (one request, waits up to `timeout`)."""
    own = sock is None
    family = 0 if sock is None else sock.family
    fam, addr = _resolve(server_host, port, family)
    if sock is None:
        sock = socket.socket(fam, socket.SOCK_DGRAM)
    old_timeout = sock.gettimeout()
    txid = new_transaction_id()
    deadline = time.monotonic() + timeout
    try:
        sock.sendto(build_request(txid), addr)
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data, _src = sock.recvfrom(2048)
            except TimeoutError:
                break
            got = _match(data, txid)
            if got is not None:
                return got
        raise StunTimeoutError(f"{server_host}:{port}", timeout)
    finally:
        if own:
            sock.close()
        else:
            sock.settimeout(old_timeout)
