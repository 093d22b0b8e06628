"""The packet filter: the netmap's `packetFilter` enforced with nftables on the mesh interface.

The rules (Tailscale's FilterRule shape: `{"srcIPs": [...], "dstPorts": [{"ip": ..., "ports":
{"first": n, "last": m}}], "ipProto": [...]}`) are accept rules for traffic *arriving* on the mesh
interface; what they do not accept is dropped, except replies to connections this host opened.
`None` (no `packetFilter` in the netmap) allows everything; an empty list denies every new inbound
connection.

Everything lives in the agent's own table `inet meshctl`: each change replaces that table in one
`nft -f` transaction (create-if-absent, delete, re-add), so there is never a moment without rules
and no other table is ever read or written. `parse_filter` and `render_ruleset` are pure; the
`PacketFilter` shell runs `nft`. The same table keeps MagicDNS's 100.100.100.100 reachable from this
host only.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import MeshctlError
from .dns import MAGICDNS_ADDRESS

__all__ = [
    "ANY",
    "DEFAULT_PROTOS",
    "DstPorts",
    "FilterError",
    "FilterRule",
    "NftError",
    "PacketFilter",
    "parse_filter",
    "render_removal",
    "render_ruleset",
]

ANY = "*"
#: IANA protocol numbers; an absent or empty ipProto means TCP, UDP, ICMP and ICMPv6 (as in Tailscale)
DEFAULT_PROTOS = (6, 17, 1, 58)
_PORTED = {6: "tcp", 17: "udp", 132: "sctp"}
_PORTLESS = {1: "icmp", 58: "ipv6-icmp"}
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_TABLE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class FilterError(MeshctlError):
    """The netmap's packetFilter is malformed; the previous rules stay in force."""

    def __init__(self, index: int | None, message: str) -> None:
        super().__init__(message if index is None else f"packetFilter rule {index}: {message}")
        self.index = index


class NftError(MeshctlError):
    """`nft` refused a ruleset or could not run."""

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message, hint="is nftables installed and is the agent root (CAP_NET_ADMIN)?")
        self.stderr = stderr


@dataclass(frozen=True)
class DstPorts:
    """Destination: a network (or ANY) and an inclusive port range (0-65535 means every port)."""

    network: Network | None  # None = any destination
    first: int = 0
    last: int = 65535


@dataclass(frozen=True)
class FilterRule:
    sources: tuple[Network, ...] | None  # None = any source
    destinations: tuple[DstPorts, ...]
    protos: tuple[int, ...] = DEFAULT_PROTOS


def _network(index: int, text: object) -> Network | None:
    if text == ANY:
        return None
    if not isinstance(text, str):
        raise FilterError(index, f"address {text!r} must be a string")
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise FilterError(index, f"{text!r} is not an IP address, a CIDR or '*'") from None


def _port(index: int, value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise FilterError(index, f"port {what} {value!r} is not an integer from 0 to 65535")
    return value


def _rule(index: int, raw: object) -> FilterRule:
    to_json = getattr(raw, "to_json", None)
    if callable(to_json):  # a meshctl.wire FilterRule
        raw = to_json()
    if not isinstance(raw, Mapping):
        raise FilterError(index, f"expected an object, found {type(raw).__name__}")
    srcs = raw.get("srcIPs")
    if not isinstance(srcs, list) or not srcs:
        raise FilterError(index, "srcIPs must be a non-empty list")
    parsed_srcs = [_network(index, s) for s in srcs]
    sources = None if None in parsed_srcs else tuple(n for n in parsed_srcs if n is not None)
    dsts = raw.get("dstPorts")
    if not isinstance(dsts, list) or not dsts:
        raise FilterError(index, "dstPorts must be a non-empty list")
    destinations = []
    for dst in dsts:
        if not isinstance(dst, Mapping):
            raise FilterError(index, f"dstPorts entry {dst!r} is not an object")
        ports = dst.get("ports", {"first": 0, "last": 65535})
        if not isinstance(ports, Mapping):
            raise FilterError(index, f"ports {ports!r} is not an object with first/last")
        first = _port(index, ports.get("first", 0), "first")
        last = _port(index, ports.get("last", first), "last")
        if last < first:
            raise FilterError(index, f"port range {first}-{last} is reversed")
        destinations.append(DstPorts(_network(index, dst.get("ip", ANY)), first, last))
    protos = raw.get("ipProto") or list(DEFAULT_PROTOS)
    if not isinstance(protos, list) or any(isinstance(p, bool) or not isinstance(p, int) or not 0 <= p <= 255
                                           for p in protos):
        raise FilterError(index, f"ipProto {protos!r} must be a list of IP protocol numbers 0-255")
    return FilterRule(sources, tuple(destinations), tuple(dict.fromkeys(protos)))


def parse_filter(raw: object) -> list[FilterRule] | None:
    """The netmap's `packetFilter` (JSON, or meshctl.wire FilterRules) → rules.

    None stays None (allow all) and an empty list or tuple stays empty (deny all): never collapse the two.
    """
    if raw is None:
        return None
    if isinstance(raw, tuple):
        raw = list(raw)
    if not isinstance(raw, list):
        raise FilterError(None, f"packetFilter must be a list, found {type(raw).__name__}")
    return [_rule(i, r) for i, r in enumerate(raw)]


def _set(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def _proto_names(protos: Sequence[int]) -> list[str]:
    return [_PORTED.get(p) or _PORTLESS.get(p) or str(p) for p in protos]


def _render_rule(index: int, rule: FilterRule, version: int) -> list[str]:
    fam = "ip" if version == 4 else "ip6"
    prefix: list[str] = []
    if rule.sources is not None:
        srcs = [str(n) for n in rule.sources if n.version == version]
        if not srcs:
            return []
        prefix.append(f"{fam} saddr {_set(srcs)}")
    lines = []
    for dst in rule.destinations:
        match = list(prefix)
        if dst.network is not None:
            if dst.network.version != version:
                continue
            match.append(f"{fam} daddr {dst.network}")
        ported = [p for p in rule.protos if p in _PORTED]
        # Port ranges do not apply to protocols without ports; ICMP of the other family never matches.
        other = [p for p in rule.protos if p not in _PORTED and _PORTLESS.get(p) != (
            "ipv6-icmp" if version == 4 else "icmp")]
        comment = f'comment "rule {index}"'
        if ported:
            ports = "" if (dst.first, dst.last) == (0, 65535) else (
                f" th dport {dst.first}" if dst.first == dst.last else f" th dport {dst.first}-{dst.last}")
            lines.append(" ".join([*match, f"meta l4proto {_set(_proto_names(ported))}{ports}", "accept", comment]))
        if other:
            lines.append(" ".join([*match, f"meta l4proto {_set(_proto_names(other))}", "accept", comment]))
    return lines


def _check_names(interface: str, table: str) -> None:
    if not _IFNAME.match(interface):
        raise NftError(f"interface name {interface!r} is not a valid Linux interface name")
    if not _TABLE.match(table):
        raise NftError(f"table name {table!r} is not a plain nftables identifier")


def render_ruleset(rules: Sequence[FilterRule] | None, interface: str = "mesh0", table: str = "meshctl") -> str:
    """The whole `nft -f` transaction replacing table `inet <table>` with these rules."""
    _check_names(interface, table)
    body = [
        "type filter hook input priority filter; policy accept;",
        # Linux accepts packets for any local address on any interface: without this, a LAN neighbour
        # routing 100.100.100.100 via this host could read mesh names and use MagicDNS as a forwarder.
        f'ip daddr {MAGICDNS_ADDRESS} iifname != "lo" drop comment "MagicDNS answers this host only"',
        f'iifname != "{interface}" accept',
    ]
    if rules is None:
        body.append(f'iifname "{interface}" accept comment "no packetFilter: allow all"')
    else:
        body += ["ct state established,related accept", "ct state invalid drop"]
        for index, rule in enumerate(rules):
            # A rule restricting no family renders identical lines twice: keep one.
            body += dict.fromkeys(_render_rule(index, rule, 4) + _render_rule(index, rule, 6))
        body.append(f'iifname "{interface}" drop comment "default deny"')
    chain = "\n".join(f"\t\t{line}" for line in body)
    return (
        f"table inet {table} {{}}\n"
        f"delete table inet {table}\n"
        f"table inet {table} {{\n\tchain input {{\n{chain}\n\t}}\n}}\n"
    )


def render_removal(table: str = "meshctl") -> str:
    """Delete the table if present (declaring it first makes the delete succeed when it is absent)."""
    _check_names("lo", table)
    return f"table inet {table} {{}}\ndelete table inet {table}\n"


class PacketFilter:
    """Installs and removes the agent's nftables table. `nft` may be prefixed (tests use `ip netns exec`)."""

    def __init__(self, interface: str = "mesh0", *, table: str = "meshctl", nft: Sequence[str] = ("nft",)) -> None:
        _check_names(interface, table)
        self.interface = interface
        self.table = table
        self.nft = tuple(nft)
        self.installed: str | None = None

    def apply(self, packet_filter: Any) -> bool:
        """Enforce the netmap's packetFilter; returns False when the ruleset is already in place."""
        ruleset = render_ruleset(parse_filter(packet_filter), self.interface, self.table)
        if ruleset == self.installed:
            return False
        self._run(ruleset)
        self.installed = ruleset
        return True

    def remove(self) -> None:
        self._run(render_removal(self.table))
        self.installed = None

    def _run(self, ruleset: str) -> None:
        try:
            done = subprocess.run([*self.nft, "-f", "-"], input=ruleset, capture_output=True, text=True,
                                  timeout=30, check=False)
        except FileNotFoundError:
            raise NftError(f"{self.nft[0]} not found") from None
        except subprocess.TimeoutExpired:
            raise NftError("nft did not finish within 30 s") from None
        if done.returncode != 0:
            first = (done.stderr.strip().splitlines() or ["no error output"])[0]
            raise NftError(f"nft refused the {self.table} ruleset: {first}", done.stderr)
