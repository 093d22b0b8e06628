"""Admission against a stand-in for the control server's `POST /derp/verify` (a real HTTP server on loopback):
registered keys get in, unregistered ones are refused, failures are fail-closed unless fail-open is set,
and mesh peers skip verification."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest

from meshctl.derp.admission import AdmissionVerifier
from meshctl.derp.client import DerpClient
from meshctl.derp.errors import AdmissionDeniedError
from meshctl.keys import DerpPrivateKey, NodePrivateKey

from .derp_helpers import client, pub, recv_packet, relay, run

pytestmark = pytest.mark.integration

TOKEN = "mskey-derp-0123456789ab-" + "f" * 64


class VerifyStandIn:
    """Minimal HTTP/1.1 server answering POST /derp/verify from a set of allowed node keys."""

    def __init__(self, allowed: set[str], status: int = 200) -> None:
        self.allowed = allowed
        self.status = status
        self.requests: list[dict[str, object]] = []
        self.auth: list[str] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        lines = head.split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        body = json.loads(await reader.readexactly(int(headers["content-length"])))
        self.requests.append(body)
        self.auth.append(headers.get("authorization", ""))
        if headers.get("authorization") != f"Bearer {TOKEN}":
            status, answer = 401, b'{"error":"bad token"}'
        else:
            status, answer = self.status, json.dumps({"Allow": body["NodePublic"] in self.allowed}).encode()
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(answer)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + answer)
        await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def stand_in(allowed: set[str], status: int = 200) -> AsyncIterator[tuple[VerifyStandIn, str]]:
    fake = VerifyStandIn(allowed, status)
    srv = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield fake, f"http://127.0.0.1:{port}/derp/verify"
    finally:
        srv.close()
        await srv.wait_closed()


def test_registered_key_is_admitted_and_an_unregistered_one_refused() -> None:
    good, bad = NodePrivateKey.generate(), NodePrivateKey.generate()

    async def body() -> None:
        async with stand_in({good.public_key().to_text()}) as (fake, verify_url), \
                relay(verifier=AdmissionVerifier(verify_url, TOKEN)) as (server, url):
            async with client(url, good) as a:
                c = DerpClient(url, bad)
                with pytest.raises(AdmissionDeniedError, match="node key not admitted"):
                    await c.connect()
                assert server.stats.refused["not_admitted"] == 1
                assert fake.requests[0] == {"NodePublic": good.public_key().to_text(), "Source": "127.0.0.1"}
                assert set(fake.auth) == {f"Bearer {TOKEN}"}
                fake.allowed.add(bad.public_key().to_text())
                async with client(url, bad) as b:  # registered now: denials are not cached
                    await b.send(good.public_key(), b"hello")
                    assert (await recv_packet(a)).data == b"hello"
            n = len(fake.requests)
            async with client(url, good):  # allow cached: no new request
                assert len(fake.requests) == n
    run(body)


def test_fail_closed_when_the_verify_server_is_down_and_fail_open_overrides() -> None:
    async def body() -> None:
        async with stand_in(set()) as (_, verify_url):
            pass  # stopped: nothing listens there any more
        async with relay(verifier=AdmissionVerifier(verify_url, TOKEN, timeout=1.0)) as (server, url):
            with pytest.raises(AdmissionDeniedError):
                await DerpClient(url, NodePrivateKey.generate()).connect()
            assert server.stats.refused["not_admitted"] == 1
        async with relay(verifier=AdmissionVerifier(verify_url, TOKEN, timeout=1.0, fail_open=True)) as (_, url), \
                client(url) as a, client(url) as b:
            await a.send(pub(b), b"fail-open")
            assert (await recv_packet(b)).data == b"fail-open"
    run(body)


def test_non_200_answer_is_a_refusal() -> None:
    async def body() -> None:
        key = NodePrivateKey.generate()
        async with stand_in({key.public_key().to_text()}, status=500) as (_, verify_url), \
                relay(verifier=AdmissionVerifier(verify_url, TOKEN)) as (_, url):
            with pytest.raises(AdmissionDeniedError):
                await DerpClient(url, key).connect()
    run(body)


def test_mesh_peers_skip_verification() -> None:
    async def body() -> None:
        async with stand_in(set()) as (fake, verify_url), \
                relay(verifier=AdmissionVerifier(verify_url, TOKEN), mesh_key="ab" * 32) as (_, url):
            mesh = DerpClient(url, DerpPrivateKey.generate(), mesh_key="ab" * 32, watch_conns=True)
            await mesh.connect()
            await mesh.ping()
            await mesh.close()
            assert fake.requests == []
    run(body)


def test_allow_cache_expires() -> None:
    now = [1000.0]
    key = NodePrivateKey.generate()

    async def body() -> None:
        async with stand_in({key.public_key().to_text()}) as (fake, verify_url), \
                relay(verifier=AdmissionVerifier(verify_url, TOKEN, cache_ttl=30, clock=lambda: now[0])) as (_, url):
            async with client(url, key):
                pass
            async with client(url, key):
                pass
            assert len(fake.requests) == 1
            now[0] += 31  # past the TTL: ask again, and a key removed at the control server is refused
            fake.allowed.clear()
            with pytest.raises(AdmissionDeniedError):
                await DerpClient(url, key).connect()
            assert len(fake.requests) == 2
    run(body)
