"""SSH certificate endpoints of the coordination server (the CA key stays in the control state dir).

    POST /machine/ssh/host-cert   node request sealed like /machine/register (Meshctl-Machine header,
                                  nonce ‖ box(json)); JSON {"hostKeys": [...], "validity": s?} → sealed
                                  {"certificates": [...], "principals": [...], "caKey", "validBefore"}
    POST /api/v1/ssh/user-cert    admin (Bearer API key): {"user", "principals", "ttl", "publicKey"}
                                  → {"certificate", "keyId", "serial", "validBefore", "principals"}
    GET  /api/v1/ssh/ca           the CA public key and the `@cert-authority` known-hosts line (public data)

`create_app` includes `router`. The settings (CA from `<state_dir>/ssh_ca`, node lookup by machine key
in the service's registry, the admin API-key check of `control.api`, domain and prefixes) are taken from
`app.state.service` by `setup(app)`, or on the first SSH request if nobody called it; `setup` also makes
the netmap carry the CA (`ssh` field: userCAKeys, hostCAKeys, principals). Tests and other embedders
call `configure_ssh(app, ...)` with explicit parts. Without either, the endpoints answer 503
`ssh_not_configured`. Errors use the server's JSON error shape `{"code", "error"}`.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ..errors import ConfigError
from ..keys import MachinePublicKey
from ..keys.sshca import (
    CA_FILE,
    DEFAULT_HOST_CERT_VALIDITY,
    DEFAULT_USER_CERT_TTL,
    SshCa,
    SshCertError,
    host_principals,
    known_hosts_line,
    parse_certificate,
)
from ..workspace import parse_duration
from .errors import SealError
from .sealing import MACHINE_HEADER, RequestOpener, seal_json

__all__ = [
    "MAX_HOST_KEYS",
    "SshNodeIdentity",
    "SshSettings",
    "configure_ssh",
    "router",
    "setup",
    "user_ca_public_line",
]

log = logging.getLogger("meshctl.control.ssh")

MAX_HOST_KEYS = 8
MIN_HOST_CERT_VALIDITY = 30


@dataclass(frozen=True, slots=True)
class SshNodeIdentity:
    """What control knows about the node asking for a host certificate."""

    hostname: str
    name: str
    addresses: tuple[str, ...]
    authorized: bool = True
    expired: bool = False


NodeLookup = Callable[[MachinePublicKey], "SshNodeIdentity | Awaitable[SshNodeIdentity | None] | None"]
AdminCheck = Callable[[Request], "Any | Awaitable[Any]"]


@dataclass
class SshSettings:
    ca: SshCa
    opener: RequestOpener
    lookup_node: NodeLookup
    require_admin: AdminCheck
    domain: str
    prefixes: tuple[str, ...] = ()
    host_cert_validity: int = DEFAULT_HOST_CERT_VALIDITY
    clock: Callable[[], float] = time.time
    signed: dict[str, int] = field(default_factory=lambda: {"host": 0, "user": 0})


def user_ca_public_line(state_dir: Path) -> str:
    """The CA public line for the netmap's `ssh` field (`userCAKeys`, `hostCAKeys`)."""
    ca, _ = SshCa.load_or_create(Path(state_dir) / CA_FILE)
    return ca.public_line()


def configure_ssh(app: Any, *, state_dir: Path, opener: RequestOpener, lookup_node: NodeLookup,
                  require_admin: AdminCheck, domain: str, prefixes: Sequence[str] = (),
                  host_cert_validity: int = DEFAULT_HOST_CERT_VALIDITY,
                  clock: Callable[[], float] = time.time) -> SshSettings:
    """Load (or create, 0600) the CA in `state_dir` and attach the SSH settings to `app.state.ssh`."""
    ca, created = SshCa.load_or_create(Path(state_dir) / CA_FILE)
    if created:
        log.info("created SSH CA %s", " ".join(ca.public_line().split()[:2]))
    settings = SshSettings(ca, opener, lookup_node, require_admin, domain, tuple(prefixes), host_cert_validity,
                           clock)
    app.state.ssh = settings
    return settings


router = APIRouter()


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "error": message}, status_code=status)


def setup(app: Any) -> SshSettings | None:
    """Configure from the control service at `app.state.service` (None if there is none)."""
    settings: SshSettings | None = getattr(app.state, "ssh", None)
    if settings is not None:
        return settings
    service = getattr(app.state, "service", None)
    if service is None:
        return None
    from ..wire import SSHConfig
    from .api import require_api_key

    def lookup(machine: MachinePublicKey) -> SshNodeIdentity | None:
        rec = service.registry.by_machine(machine)
        if rec is None:
            return None
        # Principals come only from what control assigned (the unique mesh name and addresses), never from the
        # hostname the node reports about itself: a node could otherwise claim another host's name.
        return SshNodeIdentity(hostname=rec.name, name=rec.name,
                               addresses=tuple(a for a in (rec.ipv4, rec.ipv6) if a), authorized=rec.authorized,
                               expired=rec.is_expired(service.clock()))

    cfg = service.config
    settings = configure_ssh(app, state_dir=cfg.state_dir, opener=RequestOpener(service.control_key),
                             lookup_node=lookup, require_admin=require_api_key, domain=cfg.domain,
                             prefixes=(str(cfg.ipv4_prefix), str(cfg.ipv6_prefix)), clock=service.clock)
    ca_line = settings.ca.public_line()
    ssh = SSHConfig(user_ca_keys=(ca_line,), host_ca_keys=(ca_line,), principals=("root",))
    service.mapper.ssh_config = lambda _node: ssh
    return settings


def _settings(request: Request) -> SshSettings | None:
    return setup(request.app)


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


_NOT_CONFIGURED = (503, "ssh_not_configured", "the SSH CA is not configured on this control server")


@router.post("/machine/ssh/host-cert", include_in_schema=False)
async def host_cert(request: Request) -> Response:
    s = _settings(request)
    if s is None:
        return _error(*_NOT_CONFIGURED)
    body = await request.body()
    try:
        opened = s.opener.open(request.headers.get(MACHINE_HEADER), body, s.clock())
    except SealError as err:
        return _error(400, getattr(err, "code", "bad_request"), str(err))
    node = await _maybe_await(s.lookup_node(opened.machine_key))
    if node is None:
        return _error(403, "unknown_node", "this machine key is not registered")
    if not node.authorized:
        return _error(403, "not_authorized", "this machine is not authorized yet")
    if node.expired:
        return _error(403, "node_key_expired", "this node's key has expired; re-register first")
    keys = opened.payload.get("hostKeys")
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        return _error(400, "bad_host_keys", "hostKeys must be a non-empty list of OpenSSH public key lines")
    if len(keys) > MAX_HOST_KEYS:
        return _error(400, "bad_host_keys", f"{len(keys)} host keys given, at most {MAX_HOST_KEYS}")
    validity = opened.payload.get("validity", s.host_cert_validity)
    if isinstance(validity, bool) or not isinstance(validity, int) or not (
            MIN_HOST_CERT_VALIDITY <= validity <= s.host_cert_validity):
        return _error(400, "bad_validity",
                      f"validity must be {MIN_HOST_CERT_VALIDITY}..{s.host_cert_validity} seconds, got {validity!r}")
    now = s.clock()
    try:
        principals = host_principals(node.hostname, node.name, s.domain, node.addresses)
        certs = [s.ca.sign_host(k, hostname=node.name or node.hostname, principals=principals, now=now,
                                validity=validity) for k in keys]
    except SshCertError as err:
        return _error(400, "bad_host_keys", str(err))
    infos = [parse_certificate(c) for c in certs]
    s.signed["host"] += len(certs)
    for info in infos:
        log.info("signed host certificate %s for %s (principals %s, valid until %d)", info.key_id,
                 opened.machine_key.short(), ",".join(info.principals), info.valid_before)
    reply = {"certificates": certs, "principals": principals, "caKey": s.ca.public_line(),
             "validBefore": min(i.valid_before for i in infos)}
    return Response(seal_json(opened.box, reply), media_type="application/octet-stream")


@router.post("/api/v1/ssh/user-cert", tags=["ssh"])
async def user_cert(request: Request) -> Response:
    """Sign a user public key: {"user", "principals", "ttl" (seconds or "8h"), "publicKey"}."""
    s = _settings(request)
    if s is None:
        return _error(*_NOT_CONFIGURED)
    denied = await _maybe_await(s.require_admin(request))
    if isinstance(denied, Response):
        return denied
    try:
        data = await request.json()
    except ValueError:
        return _error(400, "bad_json", "request body is not JSON")
    if not isinstance(data, dict):
        return _error(400, "bad_json", "request body must be a JSON object")
    user, principals, pub = data.get("user"), data.get("principals"), data.get("publicKey")
    if not isinstance(user, str) or not user:
        return _error(400, "bad_user", "user must be a non-empty string (who the certificate is for)")
    if not isinstance(principals, list) or not principals or not all(isinstance(p, str) for p in principals):
        return _error(400, "bad_principals", "principals must be a non-empty list of account names")
    if not isinstance(pub, str):
        return _error(400, "bad_public_key", "publicKey must be an OpenSSH public key line")
    ttl = data.get("ttl", DEFAULT_USER_CERT_TTL)
    try:
        ttl_s = parse_duration(ttl if isinstance(ttl, str | int) and not isinstance(ttl, bool) else repr(ttl), "ttl")
    except ConfigError as err:
        return _error(400, "bad_ttl", str(err))
    try:
        cert = s.ca.sign_user(pub, user=user, principals=principals, now=s.clock(), ttl=ttl_s)
    except SshCertError as err:
        return _error(400, "bad_request", str(err))
    info = parse_certificate(cert)
    s.signed["user"] += 1
    log.info("signed user certificate %s (principals %s, valid until %d)", info.key_id, ",".join(info.principals),
             info.valid_before)
    return JSONResponse({"certificate": cert, "keyId": info.key_id, "serial": str(info.serial),
                         "validAfter": info.valid_after, "validBefore": info.valid_before,
                         "principals": list(info.principals)})


@router.get("/api/v1/ssh/ca", tags=["ssh"])
async def ca_info(request: Request) -> Response:
    """The CA public key and the known-hosts line (public data: no API key needed)."""
    s = _settings(request)
    if s is None:
        return _error(*_NOT_CONFIGURED)
    line = s.ca.public_line()
    return JSONResponse({"publicKey": line, "knownHosts": known_hosts_line(line, s.domain, s.prefixes),
                         "domain": s.domain, "hostCertValidity": s.host_cert_validity})
