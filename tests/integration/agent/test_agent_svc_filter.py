"""The packet filter installed with real nft in a test-made namespace: blocked ports are blocked over a veth,
replies to outbound connections pass, changes are atomic replacements, and no other table is touched."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from meshctl.agent.filter import PacketFilter

from .test_agent_svc_netns import make_netns, needs_root, run_in, sh, unique

pytestmark = [
    pytest.mark.integration,
    pytest.mark.root,
    needs_root,
    pytest.mark.skipif(shutil.which("nft") is None, reason="nft is not installed"),
]

CLIENT_IP, SERVER_IP = "10.199.0.1", "10.199.0.2"
OTHER_TABLE = "table inet othertool {\n\tchain input {\n\t\ttype filter hook input priority 10; policy accept;\n" \
              "\t\ttcp dport 9999 counter accept\n\t}\n}\n"


@dataclass
class Pair:
    client: str  # namespace that connects
    server: str  # namespace whose "mesh interface" is filtered
    server_if: str
    listeners: list[socket.socket]


@pytest.fixture
def pair() -> Iterator[Pair]:
    client_gen, server_gen = make_netns(), make_netns()
    client, server = next(client_gen), next(server_gen)
    listeners: list[socket.socket] = []
    try:
        a, b = unique("svca"), unique("svcb")
        sh("ip", "link", "add", a, "netns", client, "type", "veth", "peer", "name", b, "netns", server)
        sh("ip", "-n", client, "addr", "add", f"{CLIENT_IP}/24", "dev", a)
        sh("ip", "-n", server, "addr", "add", f"{SERVER_IP}/24", "dev", b)
        sh("ip", "-n", client, "link", "set", a, "up")
        sh("ip", "-n", server, "link", "set", b, "up")
        sh("ip", "netns", "exec", server, "nft", "-f", "-", input=OTHER_TABLE)

        def listen(address: str, port: int) -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            sock.listen(16)  # the kernel completes handshakes without accept()
            return sock

        for port in (8001, 8002):
            listeners.append(run_in(server, lambda port=port: listen(SERVER_IP, port)))  # type: ignore[misc]
        listeners.append(run_in(client, lambda: listen(CLIENT_IP, 8100)))
        yield Pair(client, server, b, listeners)
    finally:
        for sock in listeners:
            sock.close()
        for gen in (server_gen, client_gen):
            next(gen, None)  # deletes the namespace


def connects(netns: str, address: str, port: int) -> bool:
    def attempt() -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.7)
            try:
                sock.connect((address, port))
            except (TimeoutError, ConnectionRefusedError):
                return False
            return True

    return run_in(netns, attempt)


def tables(netns: str) -> list[str]:
    return sh("ip", "netns", "exec", netns, "nft", "list", "tables").stdout.split("\n")


def other_table(netns: str) -> str:
    return sh("ip", "netns", "exec", netns, "nft", "list", "table", "inet", "othertool").stdout


def allow_tcp(port: int) -> list[dict[str, object]]:
    return [{"srcIPs": [CLIENT_IP], "dstPorts": [{"ip": SERVER_IP, "ports": {"first": port, "last": port}}],
             "ipProto": [6]}]


def test_blocked_port_is_blocked_and_the_allowed_one_is_not(pair: Pair) -> None:
    before = other_table(pair.server)
    assert connects(pair.client, SERVER_IP, 8001) and connects(pair.client, SERVER_IP, 8002)
    packet_filter = PacketFilter(pair.server_if, nft=("ip", "netns", "exec", pair.server, "nft"))
    assert packet_filter.apply(allow_tcp(8001)) is True
    assert connects(pair.client, SERVER_IP, 8001)
    assert not connects(pair.client, SERVER_IP, 8002)
    # replies to a connection the filtered host opened still come back in
    assert connects(pair.server, CLIENT_IP, 8100)
    assert other_table(pair.server) == before


def test_a_change_replaces_the_table_and_reapplying_is_a_no_op(pair: Pair) -> None:
    packet_filter = PacketFilter(pair.server_if, nft=("ip", "netns", "exec", pair.server, "nft"))
    packet_filter.apply(allow_tcp(8001))
    packet_filter.apply(allow_tcp(8002))
    assert not connects(pair.client, SERVER_IP, 8001)
    assert connects(pair.client, SERVER_IP, 8002)
    assert packet_filter.apply(allow_tcp(8002)) is False
    assert tables(pair.server).count("table inet meshctl") == 1


def test_empty_filter_denies_all_and_absent_filter_allows_all(pair: Pair) -> None:
    packet_filter = PacketFilter(pair.server_if, nft=("ip", "netns", "exec", pair.server, "nft"))
    packet_filter.apply([])
    assert not connects(pair.client, SERVER_IP, 8001)
    assert not connects(pair.client, SERVER_IP, 8002)
    packet_filter.apply(None)
    assert connects(pair.client, SERVER_IP, 8001) and connects(pair.client, SERVER_IP, 8002)


def test_remove_deletes_only_our_table(pair: Pair) -> None:
    before = other_table(pair.server)
    packet_filter = PacketFilter(pair.server_if, nft=("ip", "netns", "exec", pair.server, "nft"))
    packet_filter.apply([])
    assert "table inet meshctl" in tables(pair.server)
    packet_filter.remove()
    assert "table inet meshctl" not in tables(pair.server)
    assert other_table(pair.server) == before
    assert connects(pair.client, SERVER_IP, 8002)
    packet_filter.remove()  # removing twice (e.g. after a crash) is fine


def test_a_filter_on_another_interface_leaves_this_one_alone(pair: Pair) -> None:
    packet_filter = PacketFilter("mesh0", nft=("ip", "netns", "exec", pair.server, "nft"))
    packet_filter.apply([])
    assert connects(pair.client, SERVER_IP, 8001)


def test_magicdns_address_is_unreachable_from_other_hosts_but_not_from_this_one(pair: Pair) -> None:
    sh("ip", "-n", pair.server, "addr", "add", "100.100.100.100/32", "dev", "lo")
    sh("ip", "-n", pair.client, "route", "add", "100.100.100.100/32", "via", SERVER_IP)

    def listen() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("100.100.100.100", 53))
        sock.listen(4)
        return sock

    pair.listeners.append(run_in(pair.server, listen))
    # Linux's weak host model: a neighbour routing 100.100.100.100 via the host reaches its resolver...
    assert connects(pair.client, "100.100.100.100", 53)
    PacketFilter(pair.server_if, nft=("ip", "netns", "exec", pair.server, "nft")).apply(None)
    # ...until the agent's table is in place, even with no packetFilter (allow all on the mesh)
    assert not connects(pair.client, "100.100.100.100", 53)
    assert connects(pair.server, "100.100.100.100", 53)
    assert connects(pair.client, SERVER_IP, 8001)
