"""The relay process as `meshctl derp serve` assembles it (`service.Relay` from a config): two relays of a
region meshed through their config, with key files and a mesh-key file on disk, and TLS from cert files."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from meshctl.derp.config import load_config
from meshctl.derp.service import Relay
from meshctl.errors import ConfigError
from meshctl.keys import write_secret_file

from .derp_helpers import client, pub, recv_packet, run
from .test_derp_relay import _self_signed

pytestmark = pytest.mark.integration


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_relays_mesh_from_their_config(tmp_path: Path) -> None:
    mesh_key = tmp_path / "derp-mesh.key"
    write_secret_file(mesh_key, ("ab" * 32 + "\n" + "cd" * 32 + "\n").encode())  # dial key first, both accepted
    ports = [_port(), _port()]
    urls = [f"http://127.0.0.1:{p}/derp" for p in ports]
    configs = [load_config(None, {"listen": f"127.0.0.1:{p}", "stun_listen": "127.0.0.1:0",
                                  "key_file": str(tmp_path / f"derp{i}.key"), "region_id": 900,
                                  "mesh_with": ",".join(urls), "mesh_key_file": str(mesh_key)})
               for i, p in enumerate(ports)]

    async def body() -> None:
        relays = [Relay(c) for c in configs]
        for r in relays:
            await r.start()
        try:
            assert all(r.key_created for r in relays)
            a_srv, b_srv = (r.server for r in relays)
            assert a_srv is not None and b_srv is not None
            async with client(urls[0]) as alice, client(urls[1]) as bob:
                for _ in range(200):
                    if pub(bob).raw in a_srv.forwarders and pub(alice).raw in b_srv.forwarders:
                        break
                    await asyncio.sleep(0.02)
                await alice.send(pub(bob), b"via the region's mesh")
                assert (await recv_packet(bob)).data == b"via the region's mesh"
            assert sum(link.is_self for r in relays for link in r.mesh) == 2  # each skipped its own URL
        finally:
            for r in relays:
                await r.close()
    run(body)


def test_tls_from_cert_files(tmp_path: Path) -> None:
    import ssl

    cert, key = _self_signed(tmp_path)
    port = _port()
    cfg = load_config(None, {"listen": f"127.0.0.1:{port}", "stun_listen": "", "key_file": str(tmp_path / "k"),
                             "tls_cert": str(cert), "tls_key": str(key)})

    async def body() -> None:
        relay = Relay(cfg)
        await relay.start()
        try:
            assert relay.stun is None  # stun_listen = "" turns STUN off
            ctx = ssl.create_default_context(cafile=str(cert))
            url = f"https://127.0.0.1:{port}/derp"
            async with client(url, ssl_context=ctx) as a, client(url, ssl_context=ctx) as b:
                await a.send(pub(b), b"tls")
                assert (await recv_packet(b)).data == b"tls"
        finally:
            await relay.close()
    run(body)


def test_unusable_files_are_one_line_config_errors(tmp_path: Path) -> None:
    loose = tmp_path / "mesh.key"
    loose.write_text("ab" * 32)
    loose.chmod(0o644)
    bad_cert = tmp_path / "cert.pem"
    bad_cert.write_text("not a certificate")
    cases = [
        ({"mesh_with": "http://127.0.0.1:9/derp", "mesh_key_file": str(loose)}, r"^mesh key file: .*mesh.key is readable by group or others"),
        ({"tls_cert": str(bad_cert), "tls_key": str(bad_cert)}, "cannot load TLS certificate"),
    ]

    async def body() -> None:
        for overrides, message in cases:
            cfg = load_config(None, {"listen": "127.0.0.1:0", "stun_listen": "", "key_file": str(tmp_path / "k"),
                                     **overrides})
            relay = Relay(cfg)
            with pytest.raises(ConfigError, match=message):
                await relay.start()
            await relay.close()
    run(body)


def test_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = load_config(None, {"listen": f"127.0.0.1:{port}", "stun_listen": "", "key_file": str(tmp_path / "k")})

        async def body() -> None:
            relay = Relay(cfg)
            with pytest.raises(ConfigError, match=rf"^cannot listen for DERP on tcp 127\.0\.0\.1:{port}: "):
                await relay.start()
        run(body)
