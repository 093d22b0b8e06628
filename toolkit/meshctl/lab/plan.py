"""The shape of a lab, computed without touching the machine: hosts, roles, addresses, namespaces, names.

Pure: `plan_lab(name, prefix, nodes=, derps=, nat=)` returns a `LabPlan`; `choose_prefix(name, taken)` picks
the lab's /24 on the lab "internet" (10.200.0.0 to 10.254.255.0) starting from a hash of the name, skipping every
network already in use, so two labs with different names never share addresses.

Addresses on the lab internet `P.0/24`:
    P.1     the bridge namespace (a gateway that forwards nothing)      P.254   this machine's veth (SSH only)
    P.10    control            P.21…   derp1…        P.101…  node1… (public nodes)     P.201…  NAT routers
A NATed node N lives on its own LAN 192.168.N.0/24 (.1 the router, .2 the node).
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "MAX_DERPS",
    "MAX_NODES",
    "HostPlan",
    "LabPlan",
    "Nat",
    "Role",
    "choose_prefix",
    "parse_nat_options",
    "plan_lab",
    "root_veth_name",
    "validate_lab_name",
]

MAX_NODES = 50
MAX_DERPS = 9
_NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")


class Role(enum.StrEnum):
    CONTROL = "control"
    DERP = "derp"
    NODE = "node"


class Nat(enum.StrEnum):
    NONE = "none"
    EASY = "easy"  # MASQUERADE: keeps the source port when it can (endpoint-independent mapping)
    HARD = "hard"  # MASQUERADE --random-fully: a fresh public port per destination


@dataclass(frozen=True)
class HostPlan:
    """One host: where it lives and how this machine reaches it."""

    name: str
    role: Role
    nat: Nat
    netns: str  # the host's own network namespace (its eth0 lives there)
    address: str  # the host's address on its own network (the lab internet, or its NAT LAN)
    public_address: str  # its address as others on the lab internet see it (the router's for NATed nodes)
    router_netns: str | None = None  # NATed nodes: the router between the LAN and the lab internet
    lan_gateway: str | None = None  # NATed nodes: the router's LAN address

    @property
    def ssh_hostname(self) -> str:
        # NATed nodes are reached through a DNAT of tcp/22 on the router's public address
        return self.public_address

    @property
    def ssh_port(self) -> int:
        return 22


@dataclass(frozen=True)
class LabPlan:
    """The whole lab."""

    name: str
    prefix: str  # "10.a.b": the lab internet is prefix.0/24
    hosts: tuple[HostPlan, ...]

    @property
    def network(self) -> str:
        return f"{self.prefix}.0/24"

    @property
    def bridge_netns(self) -> str:
        return f"mlab-{self.name}-net"

    @property
    def gateway(self) -> str:
        return f"{self.prefix}.1"

    @property
    def root_address(self) -> str:
        return f"{self.prefix}.254"

    @property
    def root_veth(self) -> str:
        return root_veth_name(self.name)

    @property
    def netns_prefix(self) -> str:
        return f"mlab-{self.name}-"

    def host(self, name: str) -> HostPlan:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)


def root_veth_name(lab: str) -> str:
    """This machine's veth into the lab: interface names are global here and at most 15 bytes."""
    return "mlab" + hashlib.sha256(lab.encode()).hexdigest()[:8]


def validate_lab_name(name: str) -> str:
    """A lab name: lowercase letter then up to 11 letters/digits (it becomes part of namespace names)."""
    if not _NAME.match(name):
        raise ValueError(f"lab name {name!r} is not 1-12 lowercase letters/digits starting with a letter")
    return name


def parse_nat_options(values: Iterable[str]) -> dict[str, Nat]:
    """`["node2=easy", "node3=hard"]` → {"node2": Nat.EASY, "node3": Nat.HARD}; ValueError says what is wrong."""
    result: dict[str, Nat] = {}
    for value in values:
        node, sep, kind = value.partition("=")
        if not sep or not node:
            raise ValueError(f"--nat {value!r}: wanted NODE=easy or NODE=hard")
        try:
            result[node] = Nat(kind)
        except ValueError:
            raise ValueError(f"--nat {value!r}: NAT kind {kind!r} is not one of easy, hard, none") from None
    return result


def plan_lab(
    name: str, prefix: str, *, nodes: int = 3, derps: int = 1, nat: Mapping[str, Nat] | None = None
) -> LabPlan:
    """Every host of a lab with `derps` DERP hosts and `nodes` nodes; `nat` maps node names to NAT kinds."""
    validate_lab_name(name)
    nat = dict(nat or {})
    if not 1 <= nodes <= MAX_NODES:
        raise ValueError(f"--nodes {nodes}: wanted 1 to {MAX_NODES}")
    if not 0 <= derps <= MAX_DERPS:
        raise ValueError(f"--derps {derps}: wanted 0 to {MAX_DERPS}")
    node_names = [f"node{i}" for i in range(1, nodes + 1)]
    unknown = sorted(set(nat) - set(node_names))
    if unknown:
        raise ValueError(
            f"--nat names {', '.join(unknown)}, which is not a node of this lab ({node_names[0]}..{node_names[-1]})"
        )
    ns = f"mlab-{name}-"
    hosts = [HostPlan("control", Role.CONTROL, Nat.NONE, ns + "control", f"{prefix}.10", f"{prefix}.10")]
    for i in range(1, derps + 1):
        addr = f"{prefix}.{20 + i}"
        hosts.append(HostPlan(f"derp{i}", Role.DERP, Nat.NONE, ns + f"derp{i}", addr, addr))
    for i, node in enumerate(node_names, start=1):
        kind = nat.get(node, Nat.NONE)
        if kind is Nat.NONE:
            addr = f"{prefix}.{100 + i}"
            hosts.append(HostPlan(node, Role.NODE, kind, ns + node, addr, addr))
        else:
            hosts.append(
                HostPlan(
                    node, Role.NODE, kind, ns + node, f"192.168.{i}.2", f"{prefix}.{200 + i}",
                    router_netns=ns + node + "-nat", lan_gateway=f"192.168.{i}.1",
                )
            )  # fmt: skip
    return LabPlan(name, prefix, tuple(hosts))


def candidate_prefixes(name: str) -> list[str]:
    """Every /24 the lab may use, starting at a hash of its name (so a name tends to keep its prefix)."""
    space = [(b, c) for b in range(200, 255) for c in range(256)]
    start = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") % len(space)
    ordered = space[start:] + space[:start]
    return [f"10.{b}.{c}" for b, c in ordered]


def choose_prefix(name: str, taken: Iterable[ipaddress.IPv4Network]) -> str:
    """The first candidate /24 overlapping no network in `taken` (default routes are ignored)."""
    busy = [net for net in taken if net.prefixlen > 0]
    for prefix in candidate_prefixes(name):
        net = ipaddress.IPv4Network(f"{prefix}.0/24")
        if not any(net.overlaps(other) for other in busy):
            return prefix
    raise ValueError("every /24 from 10.200.0.0 to 10.254.255.0 is in use on this machine")
