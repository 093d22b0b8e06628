"""The lab's network: namespaces, the "internet" bridge, this machine's veth into it, and NAT routers.

Everything except one veth lives inside namespaces the lab created (named `mlab-<lab>-…`), including every
iptables rule: the routers' NAT rules die with the routers' namespaces, so the machine's own firewall is
never touched. Bridged frames would traverse iptables (bridge netfilter); the bridge namespace turns that off
for itself (the sysctl is per namespace), so router rules see only routed traffic.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Iterable
from pathlib import Path

from .plan import HostPlan, LabPlan, Nat
from .runner import in_netns, run, run_ok

__all__ = ["create_network", "delete_network", "lab_namespaces", "netns_inode", "taken_networks"]

NETNS_DIR = Path("/run/netns")


def taken_networks(state_files: Iterable[Path] = ()) -> list[ipaddress.IPv4Network]:
    """Networks this machine already uses: its addresses, its routes (all tables) and other labs' prefixes."""
    nets: list[ipaddress.IPv4Network] = []
    for entry in json.loads(run(["ip", "-j", "-4", "addr", "show"]) or "[]"):
        for info in entry.get("addr_info", []):
            nets.append(ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False))
    for route in json.loads(run(["ip", "-j", "-4", "route", "show", "table", "all"]) or "[]"):
        dst = route.get("dst", "")
        if dst and dst != "default":
            try:
                nets.append(ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False))
            except ValueError:
                continue  # multicast/broadcast forms we do not care about
    for path in state_files:
        try:
            prefix = json.loads(path.read_text())["prefix"]
            nets.append(ipaddress.IPv4Network(f"{prefix}.0/24"))
        except (OSError, ValueError, KeyError):
            continue
    return nets


def lab_namespaces(plan_prefix: str) -> list[str]:
    """Every network namespace whose name starts with the lab's prefix (`mlab-<lab>-`)."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(plan_prefix))


def netns_inode(netns: str) -> tuple[int, int] | None:
    """(device, inode) identifying a named namespace; processes inside it show the same pair."""
    try:
        st = os.stat(NETNS_DIR / netns)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _ip(netns: str | None, *args: str) -> None:
    run(["ip", *(["-n", netns] if netns else []), *args])


def _add_netns(netns: str) -> None:
    run(["ip", "netns", "add", netns])
    _ip(netns, "link", "set", "lo", "up")


def create_network(plan: LabPlan) -> None:
    """Create the bridge namespace, this machine's veth into it, and every host's (and router's) namespace."""
    bridge = plan.bridge_netns
    _add_netns(bridge)
    # bridged frames must not reach this namespace's iptables (there are none, but keep it explicit and cheap)
    run_ok(in_netns(bridge, ["sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=0"]))
    run_ok(in_netns(bridge, ["sysctl", "-q", "-w", "net.bridge.bridge-nf-call-ip6tables=0"]))
    _ip(bridge, "link", "add", "br0", "type", "bridge")
    _ip(bridge, "addr", "add", f"{plan.gateway}/24", "dev", "br0")
    _ip(bridge, "link", "set", "br0", "up")
    # this machine's way in: a veth whose only route is the lab's /24 (nothing else is routed into the lab)
    _ip(None, "link", "add", plan.root_veth, "type", "veth", "peer", "name", "uplink", "netns", bridge)
    _ip(bridge, "link", "set", "uplink", "master", "br0", "up")
    # packets arriving from the lab are never forwarded by this machine (even where ip_forward=1): the lab
    # cannot use it as a way out, whatever routes a host sets
    run(["sysctl", "-q", "-w", f"net.ipv4.conf.{plan.root_veth}.forwarding=0"])
    run_ok(["sysctl", "-q", "-w", f"net.ipv6.conf.{plan.root_veth}.disable_ipv6=1"])
    _ip(None, "addr", "add", f"{plan.root_address}/24", "dev", plan.root_veth)
    _ip(None, "link", "set", plan.root_veth, "up")
    for host in plan.hosts:
        if host.nat is Nat.NONE:
            _public_host(plan, host)
        else:
            _natted_host(plan, host)


def _attach(plan: LabPlan, port: str, netns: str, ifname: str, address: str) -> None:
    """A veth from the bridge (port `port`) to `ifname` in `netns`, addressed on the lab internet."""
    _ip(plan.bridge_netns, "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", netns)
    _ip(plan.bridge_netns, "link", "set", port, "master", "br0", "up")
    _ip(netns, "addr", "add", f"{address}/24", "dev", ifname)
    _ip(netns, "link", "set", ifname, "up")
    _ip(netns, "route", "add", "default", "via", plan.gateway)


def _public_host(plan: LabPlan, host: HostPlan) -> None:
    _add_netns(host.netns)
    _attach(plan, f"v-{host.name}", host.netns, "eth0", host.address)


def _natted_host(plan: LabPlan, host: HostPlan) -> None:
    assert host.router_netns is not None and host.lan_gateway is not None
    router = host.router_netns
    _add_netns(router)
    _add_netns(host.netns)
    _attach(plan, f"v-{host.name}-nat", router, "wan", host.public_address)
    _ip(router, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", host.netns)
    _ip(router, "addr", "add", f"{host.lan_gateway}/24", "dev", "lan")
    _ip(router, "link", "set", "lan", "up")
    _ip(host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
    _ip(host.netns, "link", "set", "eth0", "up")
    _ip(host.netns, "route", "add", "default", "via", host.lan_gateway)
    run(in_netns(router, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]))
    run(in_netns(router, ["iptables-restore"]), input_text=router_rules(host, plan.root_address))


def router_rules(host: HostPlan, operator: str) -> str:
    """iptables-restore input for a NAT router: masquerade out; in, only replies and SSH from `operator`.

    The SSH mapping (tcp/22 on the router's public address to the node) exists for this machine only, so
    that no lab host can open a connection to a NATed node."""
    random = " --random-fully" if host.nat is Nat.HARD else ""
    return f"""\
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -i wan -s {operator} -p tcp --dport 22 -j DNAT --to-destination {host.address}:22
-A POSTROUTING -o wan -j MASQUERADE{random}
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -i lan -o wan -j ACCEPT
-A FORWARD -i wan -o lan -s {operator} -p tcp -d {host.address} --dport 22 -m conntrack --ctstate DNAT -j ACCEPT
COMMIT
"""


def delete_network(plan_prefix: str, root_veth: str) -> list[str]:
    """Delete every namespace named with the lab's prefix and this machine's veth; return what was removed."""
    removed: list[str] = []
    for netns in lab_namespaces(plan_prefix):
        if run_ok(["ip", "netns", "delete", netns]):
            removed.append(f"netns {netns}")
    if Path(f"/sys/class/net/{root_veth}").exists() and run_ok(["ip", "link", "delete", root_veth]):
        removed.append(f"link {root_veth}")
    return removed
