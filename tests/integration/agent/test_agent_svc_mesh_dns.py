"""MagicDNS, host DNS and the packet filter inside real agents (agent mesh harness: control, DERP, two agents in
network namespaces). Each agent gets a private /etc/resolv.conf and /var/lib/meshctl (bind mounts in its own
mount namespace), so the test never touches the machine's DNS configuration."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path

import pytest

from meshctl.agent.filter import PacketFilter
from meshctl.agent.resolvconf import MANAGED_MARKER

from .agent_mesh_harness import HUB_IP, Agent, Mesh, Proc, have_tools, sh, wait_for
from .test_agent_svc_dns import StubUpstream
from .test_agent_svc_netns import LoopInNetns, run_in

pytestmark = [pytest.mark.integration, pytest.mark.root]

ORIGINAL_RESOLV = f"# the host's own\nnameserver {HUB_IP}\nsearch corp.example\n"


class ServicesMesh(Mesh):
    """The harness's mesh with MagicDNS and the packet filter switched on, in private DNS surroundings."""

    def write_agent_config(self, a: Agent, auth_key: str | None) -> Path:
        cfg = super().write_agent_config(a, auth_key)
        text = cfg.read_text().replace("magic_dns = false", "magic_dns = true")
        cfg.write_text(text.replace("packet_filter = false", "packet_filter = true"))
        return cfg

    def spawn(self, ns: str, name: str, argv: Sequence[str], wg_dir: Path | None = None) -> Proc:
        if name.startswith("agent-"):
            a = self.agents[name.removeprefix("agent-")]
            (a.dir / "resolv.conf").write_text(ORIGINAL_RESOLV)
            (a.dir / "varlib").mkdir(exist_ok=True)
            private = (f"mount --bind {a.dir / 'resolv.conf'} /etc/resolv.conf && "
                       f"mkdir -p /var/lib/meshctl && mount --bind {a.dir / 'varlib'} /var/lib/meshctl && "
                       'exec "$@"')
            argv = ["sh", "-c", private, "sh", *argv]
        return super().spawn(ns, name, argv, wg_dir)


@pytest.fixture(scope="module")
def svc_mesh() -> Iterator[tuple[ServicesMesh, StubUpstream]]:
    reason = have_tools()
    if reason is not None:
        pytest.skip(reason)
    if shutil.which("dig") is None:
        pytest.skip("needs dig")
    root = Path(tempfile.mkdtemp(prefix="meshctl-svc-it-"))
    m = ServicesMesh(root, tag=f"msv{os.getpid()}")
    upstream = StubUpstream()
    hub_loop: LoopInNetns | None = None
    try:
        m.build(2)
        hub_loop = LoopInNetns(m.hub)

        async def start_upstream() -> None:
            await asyncio.get_running_loop().create_datagram_endpoint(lambda: upstream, local_addr=(HUB_IP, 53))

        hub_loop.run(start_upstream())
        m.start_derp()
        m.start_control()
        key = m.mint_auth_key()
        for a in m.agents.values():
            m.start_agent(a, key)
        yield m, upstream
    except BaseException:
        print(m.logs())
        raise
    finally:
        if hub_loop is not None:
            if upstream.transport is not None:
                hub_loop.loop.call_soon_threadsafe(upstream.transport.close)
            hub_loop.close()
        m.close()
        shutil.rmtree(root, ignore_errors=True)


def dig(m: Mesh, agent: str, *args: str) -> str:
    return m.exec(m.agents[agent].ns, ["dig", "@100.100.100.100", "+time=1", "+tries=1", *args], check=False)


def test_peers_resolve_by_name_from_the_netmap(svc_mesh: tuple[ServicesMesh, StubUpstream]) -> None:
    m, upstream = svc_mesh
    n2_ip = m.agents["n2"].mesh_ip()
    wait_for("n1's MagicDNS answers n2.mesh.test",
             lambda: dig(m, "n1", "+short", "n2.mesh.test", "A").split() == [n2_ip], timeout=30)
    assert dig(m, "n1", "+short", "+tcp", "n1.mesh.test", "A").split() == [m.agents["n1"].mesh_ip()]
    assert "status: NXDOMAIN" in dig(m, "n1", "ghost.mesh.test", "A")
    assert not any(name.endswith("mesh.test.") for name in upstream.asked)


def test_other_names_go_to_the_hosts_previous_resolver(svc_mesh: tuple[ServicesMesh, StubUpstream]) -> None:
    m, upstream = svc_mesh
    wait_for("n2's MagicDNS forwards example.test",
             lambda: dig(m, "n2", "+short", "example.test", "A").split() == ["192.0.2.99"], timeout=30)
    assert "example.test." in upstream.asked


def test_the_host_resolver_points_at_magicdns(svc_mesh: tuple[ServicesMesh, StubUpstream]) -> None:
    m, _ = svc_mesh
    resolv = m.agents["n1"].dir / "resolv.conf"
    wait_for("n1's resolv.conf is managed", lambda: resolv.read_text().startswith(MANAGED_MARKER), timeout=30)
    text = resolv.read_text()
    assert "nameserver 100.100.100.100" in text.splitlines()
    assert "search mesh.test corp.example" in text.splitlines()


def test_the_filter_table_is_installed_and_the_mesh_still_works(svc_mesh: tuple[ServicesMesh, StubUpstream]) -> None:
    m, _ = svc_mesh
    n1 = m.agents["n1"]
    wait_for("n1 has its nft table", lambda: sh(["ip", "netns", "exec", n1.ns, "nft", "list", "table", "inet",
                                                 "meshctl"], check=False).startswith("table inet meshctl"))
    wait_for("n1 pings n2", lambda: m.ping(n1, m.agents["n2"].mesh_ip(), count=1, timeout=2), timeout=30)


def test_short_names_resolve_through_the_managed_resolv_conf(svc_mesh: tuple[ServicesMesh, StubUpstream]) -> None:
    """The host's own resolver (glibc, via the file the agent manages) finds a peer by its short name."""
    m, _ = svc_mesh
    n1 = m.agents["n1"]
    resolv = n1.dir / "resolv.conf"
    wait_for("n1's resolv.conf is managed", lambda: resolv.read_text().startswith(MANAGED_MARKER), timeout=30)
    lookup = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
              f'mount --bind {resolv} /etc/resolv.conf && exec getent ahostsv4 "$1"', "sh"]
    found = wait_for("getent finds n2", lambda: m.exec(n1.ns, [*lookup, "n2"], check=False), timeout=30)
    assert found.split()[0] == m.agents["n2"].mesh_ip()
    assert m.exec(n1.ns, [*lookup, "ghost"], check=False) == ""


def test_rules_are_enforced_on_a_real_wireguard_interface(svc_mesh: tuple[ServicesMesh, StubUpstream]) -> None:
    """The renderer's rules on wireguard-go's mesh0 (a second table, so the agent's own is left to the agent)."""
    m, _ = svc_mesh
    n1, n2 = m.agents["n1"], m.agents["n2"]
    n1_ip, n2_ip = n1.mesh_ip(), n2.mesh_ip()
    wait_for("n1 pings n2", lambda: m.ping(n1, n2_ip, count=1, timeout=2), timeout=30)

    def listen(port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((n2_ip, port))
        sock.listen(4)
        return sock

    def connects(port: int) -> bool:
        def attempt() -> bool:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.settimeout(1.5)
                try:
                    sock.connect((n2_ip, port))
                except (TimeoutError, ConnectionRefusedError):
                    return False
                return True
        return run_in(n1.ns, attempt)

    listeners = [run_in(n2.ns, partial(listen, port)) for port in (7001, 7002)]
    packet_filter = PacketFilter("mesh0", table="svctest", nft=("ip", "netns", "exec", n2.ns, "nft"))
    try:
        assert connects(7001) and connects(7002)
        packet_filter.apply([{"srcIPs": [n1_ip], "dstPorts": [{"ip": n2_ip, "ports": {"first": 7001, "last": 7001}}],
                              "ipProto": [6]}])
        assert connects(7001)
        assert not connects(7002)
        assert not m.ping(n1, n2_ip, count=1, timeout=1)  # ICMP is not in this rule's ipProto
        assert m.ping(n2, n1_ip, count=1, timeout=2)  # replies to n2's own traffic come back in
        packet_filter.remove()
        assert connects(7002)
        assert "table inet svctest" not in sh(["ip", "netns", "exec", n2.ns, "nft", "list", "tables"])
    finally:
        packet_filter.remove()
        for sock in listeners:
            sock.close()


def test_a_clean_stop_gives_everything_back(svc_mesh: tuple[ServicesMesh, StubUpstream]) -> None:
    m, _ = svc_mesh
    n2 = m.agents["n2"]
    wait_for("n2's resolv.conf is managed", lambda: (n2.dir / "resolv.conf").read_text().startswith(MANAGED_MARKER),
             timeout=30)
    assert m.stop_agent(n2, signal.SIGTERM) == 0
    assert (n2.dir / "resolv.conf").read_text() == ORIGINAL_RESOLV
    tables = sh(["ip", "netns", "exec", n2.ns, "nft", "list", "tables"])
    assert "table inet meshctl" not in tables
    assert "100.100.100.100" not in sh(["ip", "-n", n2.ns, "addr", "show", "dev", "lo"])

