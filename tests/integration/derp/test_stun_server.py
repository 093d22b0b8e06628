"""The STUN server on a real UDP socket: the reflexive address is the sender's own socket address,
including when probing from an existing socket; malformed datagrams get no answer and do not stop it."""

from __future__ import annotations

import asyncio
import socket

import pytest

from meshctl.stun.client import probe, probe_blocking
from meshctl.stun.errors import StunTimeoutError
from meshctl.stun.message import build_request, parse_response
from meshctl.stun.server import start_stun_server

from .derp_helpers import run

pytestmark = pytest.mark.integration


def test_probe_returns_the_address_the_server_saw() -> None:
    async def body() -> None:
        server = await start_stun_server("127.0.0.1", 0)
        host, port = server.local_address
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            try:
                assert await probe(host, port, sock=sock) == sock.getsockname()  # the agent's own socket
            finally:
                sock.close()
            ip, mapped = await probe(host, port)
            assert ip == "127.0.0.1" and mapped > 0
            assert server.answered == 2
        finally:
            server.close()
    run(body)


def test_plain_rfc5389_request_is_answered_too() -> None:
    async def body() -> None:
        server = await start_stun_server("127.0.0.1", 0)
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        try:
            txid = b"plainrequest"
            await loop.sock_sendto(sock, build_request(txid, software=None, fingerprint=False), server.local_address)
            data = await asyncio.wait_for(loop.sock_recv(sock, 2048), 3)
            resp = parse_response(data, txid)
            assert (str(resp.ip), resp.port) == sock.getsockname()
            assert len(data) == 32  # bare request (20 bytes) gets the minimal answer
        finally:
            sock.close()
            server.close()
    run(body)


def test_malformed_and_bad_fingerprint_datagrams_are_dropped_and_serving_continues() -> None:
    async def body() -> None:
        server = await start_stun_server("127.0.0.1", 0)
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        try:
            bad_fp = bytearray(build_request(bytes(12)))
            bad_fp[-1] ^= 1
            for junk in (b"hello", bytes(bad_fp), b"\x00\x01\x00\x04\x21\x12\xa4\x42" + bytes(12) + b"\x80\x22\x00\x40"):
                await loop.sock_sendto(sock, junk, server.local_address)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(loop.sock_recv(sock, 2048), 0.3)
            assert server.dropped == {"NotStunError": 1, "WrongFingerprintError": 1, "MalformedAttrsError": 1}
            assert await probe(*server.local_address, sock=sock) == sock.getsockname()
        finally:
            sock.close()
            server.close()
    run(body)


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support in this Python build")
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind(("::1", 0))
        s.close()
    except OSError:
        pytest.skip("IPv6 loopback (::1) is not configured on this host")

    async def body() -> None:
        server = await start_stun_server("::1", 0)
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            sock.bind(("::1", 0))
            try:
                ip, port = await probe("::1", server.local_address[1], sock=sock)
                assert (ip, port) == sock.getsockname()[:2]
            finally:
                sock.close()
        finally:
            server.close()
    run(body)


def test_probe_times_out_with_a_clear_error() -> None:
    quiet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    quiet.bind(("127.0.0.1", 0))  # bound but never answers
    try:
        with pytest.raises(StunTimeoutError, match=r"no STUN response from 127\.0\.0\.1:\d+ within 0\.3s"):
            probe_blocking("127.0.0.1", quiet.getsockname()[1], timeout=0.3)
    finally:
        quiet.close()
