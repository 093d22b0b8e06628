"""The mesh's SSH certificate authority: host and user certificates, the known-hosts trust line.

One ed25519 CA key lives on the control host (`/var/lib/meshctl/control/ssh_ca`, 0600, made there and
never sent anywhere). It signs

- host certificates for a node's `/etc/ssh/ssh_host_*_key.pub` (principals: hostname, `<name>.<domain>`,
  mesh addresses; 30 days by default), so clients holding only the `@cert-authority` line trust every
  mesh host without trust on first use;
- short-lived user certificates (hours) that nodes accept through `TrustedUserCAKeys`.

OpenSSH checks the certificate type, so a user certificate can never pass as a host certificate and the
other way round; one CA key for both is therefore safe. Signing is pure: the caller passes `now` and the
serial. Certificates leave this module as OpenSSH text lines (`ssh-ed25519-cert-v01@openssh.com AAAA…`).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    SSHCertificate,
    SSHCertificateBuilder,
    SSHCertificateType,
    SSHCertPublicKeyTypes,
    load_ssh_public_identity,
)

from .errors import KeyFileError, KeysError
from .keyfile import read_secret_file, write_secret_file

__all__ = [
    "CA_FILE",
    "CLOCK_SKEW",
    "DEFAULT_HOST_CERT_VALIDITY",
    "DEFAULT_USER_CERT_TTL",
    "DEFAULT_USER_EXTENSIONS",
    "MAX_USER_CERT_TTL",
    "CertInfo",
    "CertKind",
    "Due",
    "SshCa",
    "SshCertError",
    "cert_due",
    "cert_margin",
    "fmt_duration",
    "host_principals",
    "known_hosts_line",
    "new_serial",
    "parse_certificate",
    "parse_public_key",
    "user_ca_public_line",
]

CA_FILE = "ssh_ca"
DEFAULT_HOST_CERT_VALIDITY = 30 * 86400
DEFAULT_USER_CERT_TTL = 8 * 3600
MAX_USER_CERT_TTL = 7 * 86400
#: certificates start this much before `now`, so a host whose clock runs a little behind accepts them
CLOCK_SKEW = 300
#: what a user certificate permits (ssh-keygen's defaults minus X11 forwarding)
DEFAULT_USER_EXTENSIONS = ("permit-agent-forwarding", "permit-port-forwarding", "permit-pty", "permit-user-rc")
_ACCEPTED_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                       "ssh-rsa")


class SshCertError(KeysError):
    """A key or certificate given to the SSH CA is malformed or not acceptable."""


class CertKind(str, Enum):
    host = "host"
    user = "user"


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What a certificate says (parsed back from its OpenSSH text)."""

    kind: CertKind
    key_id: str
    serial: int
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int
    critical_options: dict[str, str]
    extensions: tuple[str, ...]
    signature_key: str  # the CA's public key, OpenSSH form without comment
    public_key: str  # the certified key, OpenSSH form without comment

    @property
    def validity(self) -> int:
        return self.valid_before - self.valid_after

    def remaining(self, now: float) -> int:
        return int(self.valid_before - now)


def new_serial() -> int:
    """A random 63-bit serial (unique enough to name a certificate in logs and the key id)."""
    return secrets.randbits(63) or 1


def parse_public_key(text: str | bytes) -> SSHCertPublicKeyTypes:
    """An OpenSSH public key line (`ssh-ed25519 AAAA… comment`) -> key object; refuses certificates/junk."""
    raw = text.encode() if isinstance(text, str) else text
    raw = raw.strip()
    kind = raw.split(b" ", 1)[0].decode(errors="replace")
    if kind not in _ACCEPTED_KEY_TYPES:
        raise SshCertError(f"not an SSH public key line: starts with {kind[:40]!r}, want one of "
                           + ", ".join(_ACCEPTED_KEY_TYPES))
    try:
        key = load_ssh_public_identity(raw)
    except (ValueError, TypeError) as e:
        raise SshCertError(f"malformed SSH public key ({kind}): {e}") from None
    if isinstance(key, SSHCertificate | dsa.DSAPublicKey):
        raise SshCertError(f"{kind} keys cannot be certified by the mesh CA")
    return key


def _openssh(key: SSHCertPublicKeyTypes) -> str:
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def parse_certificate(text: str | bytes) -> CertInfo:
    """Read an OpenSSH certificate line back into a CertInfo (signature checked against its CA key)."""
    raw = text.encode() if isinstance(text, str) else text
    try:
        cert = load_ssh_public_identity(raw.strip())
    except (ValueError, TypeError) as e:
        raise SshCertError(f"malformed SSH certificate: {e}") from None
    if not isinstance(cert, SSHCertificate):
        raise SshCertError("got a plain public key, want an SSH certificate")
    try:
        cert.verify_cert_signature()
    except Exception as e:  # cryptography raises InvalidSignature; any failure means "do not trust"
        raise SshCertError(f"SSH certificate signature does not verify: {type(e).__name__}") from None
    kind = CertKind.user if cert.type == SSHCertificateType.USER else CertKind.host
    return CertInfo(
        kind=kind,
        key_id=cert.key_id.decode(errors="replace"),
        serial=cert.serial,
        principals=tuple(p.decode(errors="replace") for p in cert.valid_principals),
        valid_after=cert.valid_after,
        valid_before=cert.valid_before,
        critical_options={k.decode(): v.decode(errors="replace") for k, v in cert.critical_options.items()},
        extensions=tuple(sorted(k.decode() for k in cert.extensions)),
        signature_key=_openssh(cert.signature_key()),
        public_key=_openssh(cert.public_key()),
    )


def host_principals(hostname: str, name: str, domain: str, addresses: Iterable[str]) -> list[str]:
    """Principals of a host certificate: hostname, `<name>.<domain>`, mesh addresses (no duplicates)."""
    out: list[str] = []
    for p in (hostname, name, f"{name}.{domain}" if name and domain else "", *addresses):
        p = str(p).strip()
        if "/" in p:  # an address given with its prefix length
            p = str(ipaddress.ip_interface(p).ip)
        if p and p not in out:
            _check_principal(p)
            out.append(p)
    return out


def _check_principal(p: str) -> None:
    if not p or len(p) > 255 or any(c in p for c in ", \t\r\n\0*?"):
        raise SshCertError(f"principal {p!r} is not acceptable (no spaces, commas or wildcards)")


class SshCa:
    """The CA key and the signing operations. Construct with `load_or_create` on the control host."""

    __slots__ = ("_key",)

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    def __repr__(self) -> str:
        return f"SshCa({self.public_line()!r})"

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("the SSH CA key cannot be pickled")

    @classmethod
    def generate(cls) -> SshCa:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: Path) -> SshCa:
        """Load the CA key (OpenSSH private key format); refuses a group/other-readable file."""
        data = read_secret_file(Path(path))
        try:
            key = serialization.load_ssh_private_key(data, password=None)
        except (ValueError, TypeError) as e:
            raise KeyFileError(f"{path}: not an OpenSSH private key: {e}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"{path}: holds a {type(key).__name__}, want an ed25519 SSH CA key")
        return cls(key)

    @classmethod
    def load_or_create(cls, path: Path) -> tuple[SshCa, bool]:
        """Load the CA key at `path`, or make one there (0600, parents 0700). Returns (ca, created)."""
        path = Path(path)
        if path.exists():
            return cls.load(path), False
        ca = cls.generate()
        write_secret_file(path, ca._key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.OpenSSH,
                                                       serialization.NoEncryption()))
        pub = Path(str(path) + ".pub")
        pub.write_text(ca.public_line() + "\n")
        os.chmod(pub, 0o644)
        return ca, True

    def public_line(self, comment: str = "meshctl-ssh-ca") -> str:
        """`ssh-ed25519 AAAA… comment`: the line for TrustedUserCAKeys and @cert-authority."""
        pub = self._key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                  serialization.PublicFormat.OpenSSH).decode()
        return f"{pub} {comment}" if comment else pub

    def sign_host(self, public_key: str, *, hostname: str, principals: Sequence[str], now: float,
                  validity: int = DEFAULT_HOST_CERT_VALIDITY, serial: int | None = None) -> str:
        """Sign one host public key; returns the certificate line (key id `meshctl-host:<hostname>:<serial>`)."""
        if validity <= 0:
            raise SshCertError(f"host certificate validity must be positive, got {validity}s")
        if not principals:
            raise SshCertError("a host certificate needs at least one principal")
        return self._sign(public_key, SSHCertificateType.HOST, f"meshctl-host:{hostname}", principals, now,
                          validity, serial, {}, ())

    def sign_user(self, public_key: str, *, user: str, principals: Sequence[str], now: float,
                  ttl: int = DEFAULT_USER_CERT_TTL, serial: int | None = None,
                  extensions: Sequence[str] = DEFAULT_USER_EXTENSIONS,
                  source_addresses: Sequence[str] = (), force_command: str | None = None) -> str:
        """Sign a user public key for login as `principals` (Unix accounts) for `ttl` seconds."""
        if not 0 < ttl <= MAX_USER_CERT_TTL:
            raise SshCertError(f"user certificate ttl {ttl}s is out of range (want 1s..{MAX_USER_CERT_TTL}s)")
        if not principals:
            raise SshCertError("a user certificate needs at least one principal (the Unix account to log in as)")
        _check_principal(user)
        options: dict[str, str] = {}
        if source_addresses:
            for a in source_addresses:
                try:
                    ipaddress.ip_network(a, strict=False)
                except ValueError:
                    raise SshCertError(f"source address {a!r} is not an address or CIDR") from None
            options["source-address"] = ",".join(source_addresses)
        if force_command:
            options["force-command"] = force_command
        return self._sign(public_key, SSHCertificateType.USER, f"meshctl-user:{user}", principals, now, ttl,
                          serial, options, tuple(extensions))

    def _sign(self, public_key: str, kind: SSHCertificateType, id_prefix: str, principals: Sequence[str],
              now: float, validity: int, serial: int | None, options: dict[str, str],
              extensions: tuple[str, ...]) -> str:
        key = parse_public_key(public_key)
        for p in principals:
            _check_principal(p)
        serial = new_serial() if serial is None else serial
        start = int(now) - CLOCK_SKEW
        builder = (
            SSHCertificateBuilder()
            .public_key(key)
            .type(kind)
            .serial(serial)
            .key_id(f"{id_prefix}:{serial}".encode())
            .valid_principals([p.encode() for p in principals])
            .valid_after(start)
            .valid_before(int(now) + validity)
        )
        # OpenSSH wants both lists in lexical order; cryptography wraps option values as SSH strings itself
        for name in sorted(options):
            builder = builder.add_critical_option(name.encode(), options[name].encode())
        for ext in sorted(set(extensions)):
            builder = builder.add_extension(ext.encode(), b"")
        cert = builder.sign(self._key)
        return cert.public_bytes().decode()


def known_hosts_line(ca_public_line: str, domain: str, prefixes: Iterable[str] = (),
                     extra_patterns: Iterable[str] = ()) -> str:
    """`@cert-authority *.<domain>,<patterns> ssh-ed25519 AAAA…`: trust hosts certified by the mesh CA.

    known_hosts patterns are globs, not CIDRs, so each mesh prefix becomes the glob that covers it on
    octet boundaries (100.64.0.0/10 -> `100.*`); an IPv6 prefix becomes `fd7a:115c:a1e0:*`.
    """
    patterns: list[str] = [f"*.{domain}"] if domain else []
    for prefix in prefixes:
        patterns.append(_prefix_glob(prefix))
    patterns.extend(extra_patterns)
    parts = ca_public_line.split()
    if len(parts) < 2:
        raise SshCertError(f"not an SSH public key line: {ca_public_line[:40]!r}")
    return f"@cert-authority {','.join(dict.fromkeys(patterns))} {parts[0]} {parts[1]}"


def _prefix_glob(prefix: str) -> str:
    net = ipaddress.ip_network(prefix, strict=False)
    if isinstance(net, ipaddress.IPv4Network):
        octets = str(net.network_address).split(".")
        keep = net.prefixlen // 8
        return ".".join([*octets[:keep], "*"]) if keep < 4 else str(net.network_address)
    hextets = net.network_address.exploded.split(":")
    keep = net.prefixlen // 16
    return ":".join([*(h.lstrip("0") or "0" for h in hextets[:keep]), "*"]) if keep < 8 else str(net.network_address)


@dataclass(frozen=True, slots=True)
class Due:
    """One decision: `due` now or not, the time it becomes due (epoch seconds), and why."""

    what: str
    due: bool
    due_at: float
    reason: str

    def overdue_by(self, now: float) -> float:
        return max(0.0, now - self.due_at)


def fmt_duration(seconds: float) -> str:
    """12d, 3h, 5m, 40s: the largest whole unit."""
    s = int(abs(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def cert_margin(validity: int, renew_before: int) -> int:
    """Renewal margin of a certificate valid for `validity` s: `renew_before` if shorter, else a third."""
    if 0 < renew_before < validity:
        return renew_before
    return max(validity // 3, 1)


def cert_due(cert: CertInfo | None, now: float, renew_before: int, *,
                  host_key: str | None = None, ca_key: str | None = None,
                  principals: Sequence[str] | None = None) -> Due:
    """Should the host certificate `cert` (None: none installed) be renewed now?

    `host_key`, `ca_key` (OpenSSH `type base64`, comments ignored) and `principals` are what the
    certificate should say; pass what is known.
    """
    if cert is None:
        return Due("host-cert", True, now, "no host certificate installed")
    if cert.kind is not CertKind.host:
        return Due("host-cert", True, now, "installed certificate is a user certificate")
    if host_key is not None and _bare(host_key) != _bare(cert.public_key):
        return Due("host-cert", True, now, "certificate is for another host key (host key changed)")
    if ca_key is not None and _bare(ca_key) != _bare(cert.signature_key):
        return Due("host-cert", True, now, "certificate was signed by another CA key")
    if principals is not None and set(principals) != set(cert.principals):
        missing = sorted(set(principals) - set(cert.principals))
        extra = sorted(set(cert.principals) - set(principals))
        return Due("host-cert", True, now, f"principals changed (missing {missing}, extra {extra})")
    if now >= cert.valid_before:
        return Due("host-cert", True, float(cert.valid_before),
                   f"certificate expired {_fmt(now - cert.valid_before)} ago")
    margin = cert_margin(cert.validity, renew_before)
    due_at = float(cert.valid_before - margin)
    left = cert.valid_before - now
    if now >= due_at:
        return Due("host-cert", True, due_at,
                   f"{_fmt(left)} of {_fmt(cert.validity)} validity left, renewal margin {_fmt(margin)}")
    return Due("host-cert", False, due_at, f"{_fmt(left)} validity left; renewal due in {_fmt(due_at - now)}")


def _bare(line: str) -> str:
    return " ".join(line.split()[:2])


_fmt = fmt_duration


def user_ca_public_line(state_dir: Path) -> str:
    """The CA public line for the netmap's `ssh` field (created with the CA if this is the first use)."""
    ca, _ = SshCa.load_or_create(Path(state_dir) / CA_FILE)
    return ca.public_line()
