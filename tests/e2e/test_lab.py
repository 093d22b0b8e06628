"""e2e: `meshctl lab` gives distinct real Debian machines (systemd, sshd, TUN for wireguard-go) on a lab
internet with easy and hard NAT, and `down` leaves nothing behind.

The shared session lab (`lab` fixture: control, derp1, node1, node2 easy NAT, node3 hard NAT) is only read or
touched in ways undone at once; the clean-up tests use labs of their own (`down<pid>`, `fix<pid>`).
"""

from __future__ import annotations

import json
import os
import runpy
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meshctl.lab import LabConflictError, LabState, Nat, down, load_state, up
from meshctl.lab.cgroup import own_cgroups_named
from meshctl.lab.host import lab_mounts, pid_start_time, processes_in_netns
from meshctl.lab.network import lab_namespaces, netns_inode
from meshctl.lab.plan import root_veth_name
from meshctl.lab.state import lab_dir, save_state

pytestmark = [pytest.mark.e2e, pytest.mark.root]

MESHCTL = str(Path(sys.executable).parent / "meshctl")

# one UDP socket per datagram source: the server answers with the address:port it saw the datagram come from
UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
while True:
    data, addr = s.recvfrom(64)
    s.sendto(("%s:%d" % addr).encode(), addr)
"""
UDP_PROBE = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 40123))
s.settimeout(3)
for dest in sys.argv[2:]:
    for _ in range(5):
        s.sendto(b"?", (dest, int(sys.argv[1])))
        try:
            print(s.recvfrom(64)[0].decode())
            break
        except TimeoutError:
            continue
    else:
        print("timeout")
"""
TCP_LISTEN = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen()
while True:
    c, _ = s.accept()
    c.close()
"""


def sh(lab: LabState, host: str, cmd: str, *, input_text: str | None = None) -> str:
    proc = lab.run(host, cmd, input_text=input_text, timeout=60)
    assert proc.returncode == 0, f"{host}: `{cmd}` exited {proc.returncode}: {proc.stderr.strip()}"
    return proc.stdout


def start_background(lab: LabState, host: str, name: str, script: str, *args: str) -> None:
    """Copy `script` to the host and run it detached for at most 60 s (so nothing outlives the test long)."""
    sh(lab, host, f"cat > /tmp/{name}.py", input_text=script)
    sh(lab, host, f"setsid timeout 60 python3 /tmp/{name}.py {' '.join(args)} >/dev/null 2>&1 < /dev/null &")


def stop_background(lab: LabState, host: str, name: str) -> None:
    lab.run(host, f"pkill -f /tmp/{name}.py; rm -f /tmp/{name}.py")  # inside the lab host only


def test_hosts_are_distinct_machines(lab: LabState) -> None:
    token = secrets.token_hex(8)
    marker = f"/root/lab-test-{token}"
    sh(lab, "control", f"echo {token} > {marker}")
    try:
        seen_ids = set()
        for host in lab.hosts:
            out = sh(lab, host.name, f"hostname; cat /etc/machine-id; test -e {marker} && echo has-marker || true")
            lines = out.split()
            assert lines[0] == host.name
            assert lines[1] == host.machine_id
            seen_ids.add(lines[1])
            assert ("has-marker" in lines) == (host.name == "control"), f"{host.name}: marker visibility wrong"
        assert len(seen_ids) == len(lab.hosts) == 5
    finally:
        lab.run("control", f"rm -f {marker}")


def test_systemd_is_pid1_and_running_everywhere(lab: LabState) -> None:
    for host in lab.hosts:
        out = sh(lab, host.name, "cat /proc/1/comm; timeout 30 systemctl is-system-running --wait || "
                                 "systemctl --failed --no-legend")  # fmt: skip
        comm, status = out.split("\n", 1)
        assert comm == "systemd"
        assert status.strip() == "running", f"{host.name}: {status.strip()}"
        assert sh(lab, host.name, "systemctl is-active ssh").strip() == "active"


def test_wireguard_go_creates_a_tun_device_on_a_node(lab: LabState) -> None:
    iface = "wglabtest"
    try:
        sh(lab, "node3", f"wireguard-go {iface} >/dev/null 2>&1; "
                         f"for i in $(seq 50); do test -S /var/run/wireguard/{iface}.sock && break; sleep 0.1; done")  # fmt: skip
        out = sh(lab, "node3", f"ip -d link show {iface}; wg genkey > /tmp/{iface}.key; "
                               f"wg set {iface} private-key /tmp/{iface}.key listen-port 51999; wg show {iface}")  # fmt: skip
        assert "tun" in out
        assert "listening port: 51999" in out
    finally:
        lab.run("node3", f"ip link delete {iface}; rm -f /tmp/{iface}.key")  # wireguard-go exits with its device


@pytest.mark.parametrize("node", ["node2", "node3"])
def test_natted_node_reaches_control_but_control_cannot_reach_it(lab: LabState, node: str) -> None:
    control = lab.host("control")
    behind = lab.host(node)
    start_background(lab, "control", "listen", TCP_LISTEN, "7001")
    start_background(lab, node, "listen", TCP_LISTEN, "7001")
    try:
        time.sleep(0.5)
        sh(lab, node, "nc -z -w 2 127.0.0.1 7001")  # the node's listener is up: a failure below is the NAT's doing
        assert lab.run(node, f"nc -z -w 3 {control.address} 7001").returncode == 0, "NATed node cannot reach control"
        for target, port in ((behind.public_address, 7001), (behind.address, 7001), (behind.public_address, 22)):
            proc = lab.run("control", f"nc -z -w 1 {target} {port}")
            assert proc.returncode != 0, f"control opened a connection to {node} at {target}:{port}"
    finally:
        stop_background(lab, "control", "listen")
        stop_background(lab, node, "listen")


def test_hard_nat_maps_each_destination_to_its_own_port_easy_nat_does_not(lab: LabState) -> None:
    destinations = [lab.host("control").address, lab.host("derp1").address]
    for host in ("control", "derp1"):
        start_background(lab, host, "echo", UDP_ECHO, "7002")
    try:
        time.sleep(0.5)
        seen = {}
        for node in ("node1", "node2", "node3"):
            sh(lab, node, "cat > /tmp/probe.py", input_text=UDP_PROBE)
            seen[node] = sh(lab, node, f"python3 /tmp/probe.py 7002 {' '.join(destinations)}").split()
        public = {n: lab.host(n).public_address for n in seen}
        # no NAT, and easy NAT: one mapping (the source port kept) whatever the destination
        assert seen["node1"] == [f"{public['node1']}:40123"] * 2
        assert seen["node2"] == [f"{public['node2']}:40123"] * 2
        # hard NAT: the router's address, a different port for each destination
        addrs = [s.split(":")[0] for s in seen["node3"]]
        ports = [s.split(":")[1] for s in seen["node3"]]
        assert addrs == [public["node3"]] * 2, seen["node3"]
        assert ports[0] != ports[1], seen["node3"]
    finally:
        for host in ("control", "derp1"):
            stop_background(lab, host, "echo")


def test_cli_ssh_returns_the_remote_exit_code_and_status_names_the_inventory(lab: LabState) -> None:
    proc = subprocess.run([MESHCTL, "lab", "ssh", "node2", "--name", lab.name, "--", "sh", "-c", "hostname; exit 3"],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert (proc.returncode, proc.stdout.strip()) == (3, "node2")
    status = subprocess.run([MESHCTL, "lab", "status", "--name", lab.name, "--json"],
                            capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    data = json.loads(status.stdout)
    assert {h["name"]: h["running"] for h in data["hosts"]} == {h.name: True for h in lab.hosts}
    assert Path(data["inventory"]).is_file()
    assert os.stat(data["ssh_key"]).st_mode & 0o777 == 0o600


def test_inventory_groups_the_running_lab_for_pyinfra(lab: LabState) -> None:
    namespace = runpy.run_path(str(Path(__file__).resolve().parents[2] / "inventories" / "lab.py"))
    groups = {g: [name for name, _ in namespace[g][0]] for g in ("control", "derp", "nodes")}
    assert groups == {"control": ["control"], "derp": ["derp1"], "nodes": ["node1", "node2", "node3"]}
    node3 = dict(namespace["nodes"][0])["node3"]
    assert node3["ssh_hostname"] == lab.host("node3").public_address != lab.host("node3").address
    assert node3["ssh_strict_host_key_checking"] == "yes"
    assert node3["nat"] == "hard"
    assert dict(namespace["derp"][0])["derp1"]["derp_region"] == 900


def _everything_of(name: str) -> dict[str, object]:
    return {
        "namespaces": lab_namespaces(f"mlab-{name}-"),
        "mounts": lab_mounts(lab_dir(name)),
        "veth": Path(f"/sys/class/net/{root_veth_name(name)}").exists(),
        "dir": lab_dir(name).exists(),
        "cgroups": own_cgroups_named(f"mlab-{name}-"),
    }


def test_down_leaves_nothing_and_twice_is_fine(lab_machine: None) -> None:
    name = f"down{os.getpid()}"  # unique: other sessions may run this test on the same machine
    try:
        state = up(name, nodes=1, derps=0, nat={"node1": Nat.HARD})
        # a wireguard-go in a host must die with the lab (it would outlive its namespace otherwise)
        state.run("node1", "wireguard-go wgdown >/dev/null 2>&1", check=True)
        processes = []
        for netns in lab_namespaces(f"mlab-{name}-"):
            inode = netns_inode(netns)
            assert inode is not None
            processes += [(pid, pid_start_time(pid)) for pid in processes_in_netns(inode)]
        assert len(processes) > 5  # systemd, journald, sshd, wireguard-go, ...
        before = _everything_of(name)
        assert len(before["namespaces"]) == 4 and len(before["mounts"]) == 2 and before["veth"]  # type: ignore[arg-type]
        assert len(before["cgroups"]) >= 2  # type: ignore[arg-type]
        down(name)
        assert _everything_of(name) == {"namespaces": [], "mounts": [], "veth": False, "dir": False, "cgroups": []}
        alive = [pid for pid, start in processes if start is not None and pid_start_time(pid) == start]
        assert alive == []
        again = down(name)
        assert (again.stopped, again.killed, again.unmounted, again.removed) == ([], [], [], [])
    finally:
        down(name)


def test_up_repairs_a_half_dead_lab_and_refuses_another_shape(lab_machine: None) -> None:
    name = f"fix{os.getpid()}"
    try:
        first = up(name, nodes=2, derps=0)
        with pytest.raises(LabConflictError, match="another shape"):
            up(name, nodes=3, derps=0)
        victim = first.host("node2")
        os.kill(victim.pid, 9)  # the lab's own systemd-nspawn: simulate a crashed host
        deadline = time.monotonic() + 10
        while pid_start_time(victim.pid) == victim.pid_start and time.monotonic() < deadline:
            time.sleep(0.05)
        repaired = up(name, nodes=2, derps=0)
        assert repaired.host("node2").pid != victim.pid
        assert [h.name for h in repaired.hosts] == ["control", "node1", "node2"]
        assert repaired.run("node2", "systemctl is-active ssh").stdout.strip() == "active"
        assert load_state(name).host("node2").pid == repaired.host("node2").pid
        # a crash early in `up`: the placeholder state (no hosts yet) and a namespace exist, nothing runs
        down(name)
        save_state(LabState(name, repaired.prefix, first.ssh_key, first.known_hosts, first.state_path, ()))
        subprocess.run(["ip", "netns", "add", f"mlab-{name}-net"], check=True)
        again = up(name, nodes=2, derps=0)
        assert again.run("node1", "true").returncode == 0
    finally:
        down(name)
    assert _everything_of(name) == {"namespaces": [], "mounts": [], "veth": False, "dir": False, "cgroups": []}
