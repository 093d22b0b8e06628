"""The agent's SSH side: host certificates from the mesh CA for this host's sshd, and trust in the user CA.

    /etc/ssh/ssh_host_<type>_key.pub        collected; only public halves leave the host
    /etc/ssh/ssh_host_<type>_key-cert.pub   the certificates control signs (0644)
    /etc/ssh/meshctl_user_ca.pub            the mesh CA line, for TrustedUserCAKeys (0644)
    /etc/ssh/sshd_config.d/meshctl.conf     drop-in: HostCertificate lines + TrustedUserCAKeys

The request goes to `POST /machine/ssh/host-cert`, sealed with the machine key exactly like
`/machine/register` (control's sealing helpers). New files are checked with `sshd -t` before sshd is
reloaded; if the check fails the previous files are put back. A certificate is renewed when less than
its renewal margin is left (`meshctl.keys.sshca.cert_due`: a third of its validity by default).
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from ..errors import MeshctlError
from ..keys import ControlPublicKey, MachinePrivateKey, load_private_key
from ..keys.sshca import CertInfo, Due, SshCertError, cert_due, parse_certificate
from .config import AgentConfig
from .errors import AgentError

__all__ = [
    "HostCertKeeper",
    "HostCertOutcome",
    "HostCertReply",
    "SshCertAgentError",
    "SshPaths",
    "collect_host_keys",
    "ensure_host_cert",
    "host_cert_status",
    "install_host_certs",
    "reload_sshd",
    "render_dropin",
    "request_host_certs",
]


log = logging.getLogger(__name__)


class SshCertAgentError(AgentError):
    """Getting or installing a host certificate failed."""


@dataclass(frozen=True, slots=True)
class SshPaths:
    ssh_dir: Path = Path("/etc/ssh")
    dropin: Path = Path("/etc/ssh/sshd_config.d/meshctl.conf")
    user_ca: Path = Path("/etc/ssh/meshctl_user_ca.pub")

    @staticmethod
    def cert_path(pub: Path) -> Path:
        return pub.with_name(pub.name.removesuffix(".pub") + "-cert.pub")


@dataclass(frozen=True, slots=True)
class HostCertReply:
    certificates: tuple[str, ...]
    principals: tuple[str, ...]
    ca_key: str
    valid_before: int


def collect_host_keys(paths: SshPaths = SshPaths()) -> list[tuple[Path, str]]:
    """(path, public line) of each `ssh_host_*_key.pub`, ed25519 first; DSA keys are skipped."""
    found = []
    for pub in sorted(paths.ssh_dir.glob("ssh_host_*_key.pub")):
        line = pub.read_text().strip()
        if not line or line.startswith("ssh-dss"):
            continue
        found.append((pub, " ".join(line.split()[:2])))
    found.sort(key=lambda item: (not item[1].startswith("ssh-ed25519"), str(item[0])))
    return found


async def request_host_certs(url: str, control_key: ControlPublicKey, machine_key: MachinePrivateKey,
                             host_keys: Sequence[str], *, validity: int | None = None,
                             clock: Callable[[], float] = time.time,
                             transport: httpx.AsyncBaseTransport | None = None) -> HostCertReply:
    """Ask control to sign `host_keys` (authenticated by the machine key); returns the opened reply."""
    from ..control.sealing import open_json, seal_request

    payload: dict[str, object] = {"hostKeys": list(host_keys)}
    if validity is not None:
        payload["validity"] = validity
    headers, body = seal_request(machine_key, control_key, payload, clock())
    try:
        async with httpx.AsyncClient(base_url=url.rstrip("/"), transport=transport, timeout=15.0) as http:
            resp = await http.post("/machine/ssh/host-cert", headers=headers, content=body)
    except httpx.TransportError as err:
        raise SshCertAgentError(f"cannot reach control server at {url}: {err or type(err).__name__}") from None
    if resp.status_code != 200:
        try:
            err_body = resp.json()
            detail = f"{err_body.get('code')}: {err_body.get('error')}"
        except ValueError:
            detail = resp.text[:200]
        raise SshCertAgentError(f"control refused the host certificate request ({resp.status_code} {detail})")
    data = open_json(machine_key.box(control_key), resp.content, "host-cert response")
    try:
        return HostCertReply(tuple(data["certificates"]), tuple(data["principals"]), str(data["caKey"]),
                             int(data["validBefore"]))
    except (KeyError, TypeError, ValueError) as err:
        raise SshCertAgentError(f"malformed host-cert response from control: {err}") from None


def render_dropin(cert_paths: Sequence[Path], user_ca: Path | None) -> str:
    lines = ["# Managed by meshctl (agent/sshcert): host certificates and the mesh user CA.", ""]
    lines += [f"HostCertificate {p}" for p in cert_paths]
    if user_ca is not None:
        lines.append(f"TrustedUserCAKeys {user_ca}")
    return "\n".join(lines) + "\n"


def _write_public(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def install_host_certs(paths: SshPaths, pubs: Sequence[Path], reply: HostCertReply, *,
                       validate: Callable[[], str | None] | None = None) -> bool:
    """Write the certificates, the user CA file and the drop-in. Returns True if anything changed.

    `validate()` returns None if sshd accepts the new configuration, else the reason; on a reason the
    previous files are restored and SshCertAgentError is raised.
    """
    if len(pubs) != len(reply.certificates):
        raise SshCertAgentError(f"control returned {len(reply.certificates)} certificates for {len(pubs)} keys")
    for pub, cert in zip(pubs, reply.certificates, strict=True):
        try:
            info = parse_certificate(cert)
        except SshCertError as err:
            raise SshCertAgentError(f"control returned a bad certificate for {pub}: {err}") from None
        if info.public_key != " ".join(pub.read_text().split()[:2]):
            raise SshCertAgentError(f"control returned a certificate for another key than {pub}")
    wanted: dict[Path, str] = {SshPaths.cert_path(p): c.strip() + "\n" for p, c in zip(pubs, reply.certificates,
                                                                                       strict=True)}
    wanted[paths.user_ca] = reply.ca_key.strip() + "\n"
    wanted[paths.dropin] = render_dropin([SshPaths.cert_path(p) for p in pubs], paths.user_ca)
    before = {p: (p.read_text() if p.exists() else None) for p in wanted}
    if all(before[p] == text for p, text in wanted.items()):
        return False
    for p, text in wanted.items():
        _write_public(p, text)
    reason = validate() if validate is not None else None
    if reason is not None:
        for p, old in before.items():
            if old is None:
                p.unlink(missing_ok=True)
            else:
                _write_public(p, old)
        raise SshCertAgentError(f"sshd rejects the new certificate configuration, kept the old one: {reason}")
    return True


def sshd_check() -> str | None:
    """`sshd -t`: None if the configuration is valid, else sshd's complaint."""
    proc = subprocess.run(["sshd", "-t"], capture_output=True, text=True, check=False)
    return None if proc.returncode == 0 else (proc.stderr.strip() or f"sshd -t exited {proc.returncode}")


def reload_sshd() -> str:
    """Reload sshd so it picks up the new certificate (Debian's unit is ssh.service, others sshd.service)."""
    for unit in ("ssh.service", "sshd.service"):
        proc = subprocess.run(["systemctl", "reload-or-restart", unit], capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            return unit
    raise SshCertAgentError("could not reload sshd (tried ssh.service and sshd.service)")


def installed_certificate(paths: SshPaths = SshPaths()) -> tuple[str, CertInfo | None]:
    """The first host key's public line and its installed certificate (None if missing or unreadable)."""
    keys = collect_host_keys(paths)
    if not keys:
        raise SshCertAgentError(f"no SSH host keys in {paths.ssh_dir} (is openssh-server installed?)")
    pub, line = keys[0]
    cert_path = SshPaths.cert_path(pub)
    try:
        return line, parse_certificate(cert_path.read_text())
    except (OSError, SshCertError):
        return line, None


def host_cert_status(renew_before: int, now: float, paths: SshPaths = SshPaths(),
                     ca_key: str | None = None) -> Due:
    """Is this host's certificate due for renewal (policy `host_cert_renew_before`, current host key and CA)?"""
    line, info = installed_certificate(paths)
    return cert_due(info, now, renew_before, host_key=line, ca_key=ca_key)


@dataclass(frozen=True, slots=True)
class HostCertOutcome:
    due: Due
    renewed: bool
    changed: bool = False
    valid_before: int | None = None
    reloaded: str | None = None


async def ensure_host_cert(cfg: AgentConfig, renew_before: int, *, force: bool = False, validity: int | None = None,
                           paths: SshPaths = SshPaths(), now: float | None = None,
                           validate: Callable[[], str | None] | None = sshd_check,
                           reload: Callable[[], str] | None = reload_sshd) -> HostCertOutcome:
    """Renew this host's certificate if it is due (or `force`), install it and reload sshd.

    The daemon calls this after registration and periodically; `meshctl agent rotate --if-due` too.
    """
    now = time.time() if now is None else now
    due = host_cert_status(renew_before, now, paths)
    if not (due.due or force):
        return HostCertOutcome(due, False)
    machine = load_private_key(cfg.machine_key_path, MachinePrivateKey)
    keys = collect_host_keys(paths)
    reply = await request_host_certs(cfg.control_url, cfg.control_key, machine, [line for _, line in keys],
                                     validity=validity)
    changed = install_host_certs(paths, [p for p, _ in keys], reply, validate=validate)
    unit = reload() if changed and reload is not None else None
    return HostCertOutcome(due, True, changed, reply.valid_before, unit)


class HostCertKeeper:
    """For the daemon: keeps this host's certificate fresh without ever disturbing the data plane.

    Call `await keeper.tick()` after registration and on every netmap update: it checks at most once per
    `interval` (10 min) or `retry` after a failure (1 min), renews when due, and logs instead of raising.
    Hosts without sshd (no host keys) are checked once and then left alone.
    """

    def __init__(self, cfg: AgentConfig, renew_before: int = 10 * 86400, *, interval: float = 600.0,
                 retry: float = 60.0, paths: SshPaths = SshPaths(), clock: Callable[[], float] = time.monotonic,
                 ensure: Callable[..., Awaitable[HostCertOutcome]] | None = None) -> None:
        self.cfg = cfg
        self.renew_before = renew_before
        self.interval = interval
        self.retry = retry
        self.paths = paths
        self.clock = clock
        self._ensure = ensure or ensure_host_cert
        self._next = 0.0
        self.disabled = False
        self.last: HostCertOutcome | None = None

    async def tick(self) -> HostCertOutcome | None:
        now = self.clock()
        if self.disabled or now < self._next:
            return None
        if not collect_host_keys(self.paths):
            self.disabled = True
            log.info("sshcert: no SSH host keys in %s; host certificates disabled", self.paths.ssh_dir)
            return None
        try:
            out = await self._ensure(self.cfg, self.renew_before, paths=self.paths)
        except MeshctlError as err:
            self._next = now + self.retry
            log.warning("sshcert: %s", err)
            return None
        self._next = now + self.interval
        self.last = out
        if out.renewed:
            log.info("sshcert: host certificate renewed (%s), valid until %s", out.due.reason, out.valid_before)
        return out
