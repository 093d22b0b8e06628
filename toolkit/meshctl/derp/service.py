"""The relay process: key file, TLS, admission, DERP listener, STUN listener and mesh links, wired together.

`Relay(config)` → `await relay.start()` (binds everything, logs one line with the public key and the
addresses, never the private key) → `await relay.close()`. `serve(config)` runs it until SIGINT/SIGTERM.
Uses uvloop when it is installed (optional).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from pathlib import Path

from ..errors import ConfigError
from ..keys import DerpPrivateKey, KeysError, load_or_create_private_key, read_secret_file
from ..stun.server import StunServer, start_stun_server
from .admission import AdmissionVerifier
from .config import RelayConfig, parse_hostport
from .handshake import parse_mesh_key_file
from .mesh import MeshLink
from .server import DerpServer

__all__ = ["Relay", "run", "serve"]

log = logging.getLogger("meshctl.derp")


def _read_secret_text(path: Path, what: str) -> str:
    try:
        return read_secret_file(path).decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not UTF-8 text") from None


def _tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"cannot load TLS certificate {cert} / key {key}: {e}") from None
    return ctx


class Relay:
    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.server: DerpServer | None = None
        self.stun: StunServer | None = None
        self.mesh: list[MeshLink] = []
        self.derp_address: tuple[str, int] | None = None
        self.stun_address: tuple[str, int] | None = None
        self.key_created = False

    async def start(self) -> None:
        cfg = self.config
        try:
            key, self.key_created = load_or_create_private_key(cfg.key_file, DerpPrivateKey)
        except KeysError as e:
            raise ConfigError(f"DERP key file: {e}", hint=e.hint) from None
        mesh_keys: list[str] = []
        if cfg.mesh_key_file is not None:
            try:
                mesh_keys = parse_mesh_key_file(_read_secret_text(cfg.mesh_key_file, "mesh key file"))
            except KeysError as e:
                raise ConfigError(f"mesh key file: {e}", hint=e.hint) from None
        verifier = None
        if cfg.verify_url:
            assert cfg.verify_token_file is not None
            try:
                token = _read_secret_text(cfg.verify_token_file, "verify token file")
            except KeysError as e:
                raise ConfigError(f"verify token file: {e}", hint=e.hint) from None
            verifier = AdmissionVerifier(cfg.verify_url, token, fail_open=cfg.verify_fail_open)
        tls = _tls_context(cfg.tls_cert, cfg.tls_key) if cfg.tls_cert and cfg.tls_key else None
        self.server = DerpServer(key, mesh_key=mesh_keys, verifier=verifier)
        host, port = parse_hostport(cfg.listen, "listen")
        where = f"DERP on tcp {cfg.listen}"
        try:
            self.derp_address = await self.server.listen(host, port, ssl_context=tls)
            if cfg.stun_listen:
                where = f"STUN on udp {cfg.stun_listen}"
                shost, sport = parse_hostport(cfg.stun_listen, "stun_listen")
                self.stun = await start_stun_server(shost, sport)
                self.stun_address = self.stun.local_address
        except OSError as e:
            await self.close()
            hint = "ports below 1024 need root or CAP_NET_BIND_SERVICE" if e.errno == 13 else None
            raise ConfigError(f"cannot listen for {where}: {e.strerror or e}", hint=hint) from None
        self.server.metrics_hooks.append(self._copy_stun_stats)
        for url in cfg.mesh_with:
            link = MeshLink(self.server, url, key, mesh_keys[0])  # dial with the first key of the file
            await link.start()
            self.mesh.append(link)
        scheme = "https" if tls else "http"
        stun = f"udp {self.stun_address[0]}:{self.stun_address[1]}" if self.stun_address else "off"
        log.info("meshctl derp %s: DERP %s://%s:%d/derp, STUN %s%s%s%s%s", self.server.public_key.to_text(),
                 scheme, *self.derp_address, stun,
                 f", region {cfg.region_id}" if cfg.region_id is not None else "",
                 f", admission {cfg.verify_url} ({'fail-open' if cfg.verify_fail_open else 'fail-closed'})"
                 if cfg.verify_url else ", admission off",
                 f", mesh with {len(cfg.mesh_with)} peer(s)" if cfg.mesh_with else "",
                 " (new key file written)" if self.key_created else "")
        if not cfg.verify_url:
            log.warning("DERP admission is OFF: any client can relay through this server. Point --verify-url at the "
                        "control server's /derp/verify (meshctl deploy and the NixOS module do) to admit only "
                        "registered nodes")

    def _copy_stun_stats(self) -> None:
        if self.server is not None and self.stun is not None:
            self.server.stats.stun_answered = self.stun.answered
            self.server.stats.stun_dropped = self.stun.dropped.copy()

    async def close(self) -> None:
        for link in self.mesh:
            await link.close()
        if self.stun is not None:
            self.stun.close()
        if self.server is not None:
            await self.server.close()


async def serve(config: RelayConfig, stop: asyncio.Event | None = None) -> None:
    """Run the relay until SIGINT/SIGTERM (or until `stop` is set)."""
    relay = Relay(config)
    await relay.start()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("meshctl derp: shutting down")
        await relay.close()


def run(config: RelayConfig) -> None:
    """Blocking entry point for the CLI; uses uvloop if installed."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(config))
    else:  # pragma: no cover - optional dependency
        uvloop.run(serve(config))
