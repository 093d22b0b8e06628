"""The module's units, hardening and all, run by a real systemd: two Debian containers (the lab's cached rootfs)
booted with systemd-nspawn — one with the control server, a DERP relay, a node agent and the rotation job,
one with a second node — whose nodes ping each other over the mesh, directly and then through the relay.

The NixOS VM test (nix/tests/vm.nix) needs Nix and KVM; this test gets the same units — rendered from
nix/module.nix by the evaluation harness, only with the store paths replaced — under systemd here, and checks
that each daemon works inside its sandbox: credentials read through LoadCredential, state directories made
for the right users, the agent's TUN device and capabilities, the rotation job writing /etc/ssh and reloading
sshd. Each container has a network namespace of its own, the two joined by one veth pair; everything is
removed afterwards (containers stopped by PID, overlays unmounted, namespaces deleted).
Not covered here: device access rules (DevicePolicy/DeviceAllow) are not enforced in this container (systemd
cannot attach its device filter when the machine's PID 1 is not systemd), so `DeviceAllow=/dev/net/tun` is
checked by the evaluation test only.

Needs root, NIXPKGS_LIB, systemd-nspawn and the lab's rootfs (`make rootfs`); skipped with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .nixtool import HARNESS, Nix, nix_path, render_unit, to_nix, write_toml

pytestmark = [pytest.mark.root, pytest.mark.e2e]

FAKE_MESHCTL = "/nix/store/0000000000000000000000000000000a-meshctl/bin/meshctl"
VENV = Path(__file__).resolve().parents[2] / ".venv"
TOOLKIT = Path(__file__).resolve().parents[2] / "toolkit"
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CAP_NET_BIND_SERVICE, CAP_NET_ADMIN, CAP_NET_RAW = 10, 12, 13


def _rootfs() -> Path:
    if os.geteuid() != 0:
        pytest.skip("needs root (mounts an overlay and boots a container)")
    if shutil.which("systemd-nspawn") is None:
        pytest.skip("systemd-nspawn is not installed (Debian: systemd-container)")
    from meshctl.lab.rootfs import cached_rootfs

    root = cached_rootfs()
    if root is None:
        pytest.skip("the lab's rootfs is not built yet (make rootfs)")
    py = f"python{sys.version_info.major}.{sys.version_info.minor}"
    if not (root / "usr/bin" / py).exists():
        pytest.skip(f"the rootfs has no {py} to run this venv's packages with")
    return root


@dataclass
class Container:
    root: Path
    leader: int

    def run(self, cmd: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(["nsenter", "-t", str(self.leader), "-a", "/bin/sh", "-c", cmd], capture_output=True,
                           text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"{cmd!r} exited {p.returncode}: {p.stdout}{p.stderr}\n" + self.journal())
        return p

    def out(self, cmd: str) -> str:
        return self.run(cmd).stdout.strip()

    def journal(self) -> str:
        p = subprocess.run(["nsenter", "-t", str(self.leader), "-a", "journalctl", "--no-pager", "-n", "60",
                            "-u", "meshctl-*"], capture_output=True, text=True, timeout=30)
        return "journal:\n" + "\n".join(line for line in p.stdout.splitlines() if "Failed to kill" not in line)

    # Generous: the machine is shared, and a loaded 2-core box boots the container slowly.
    def wait(self, cmd: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while True:
            p = self.run(cmd, check=False)
            if p.returncode == 0:
                return p.stdout.strip()
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {cmd!r}: {p.stdout}{p.stderr}\n" + self.journal())
            time.sleep(0.5)

    def pid_of(self, unit: str) -> int:
        return int(self.out(f"systemctl show -p MainPID --value {unit}"))

    def status(self, pid: int) -> dict[str, str]:
        """/proc/PID/status of a process in the container (PIDs are the container's)."""
        text = self.out(f"cat /proc/{pid}/status")
        return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def _caps(mask_hex: str) -> set[int]:
    mask = int(mask_hex, 16)
    return {bit for bit in range(64) if mask >> bit & 1}


def _container_init(nspawn_pid: int) -> int | None:
    """Host PID of the container's PID 1 (nspawn forks helpers first): the descendant of `nspawn_pid` that is
    PID 1 in its own PID namespace."""
    todo = [nspawn_pid]
    while todo:
        pid = todo.pop()
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        nspid = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
        if len(nspid) > 1 and nspid[-1] == "1":
            return pid
        todo += [int(c) for c in children]
    return None


NET = "10.213.0"  # a /30 between the two containers' own network namespaces


def _module(ctrlkey: str, *, servers: bool) -> dict[str, Any]:
    node = {"enable": True, "controlUrl": f"http://{NET}.1:8080", "controlKey": ctrlkey,
            "authKeyFile": "/etc/meshctl/authkey", "backend": "userspace"}
    if not servers:
        return {"services.meshctl.node": node}
    return {
        "services.meshctl.control": {
            "enable": True, "listen": "0.0.0.0:8080", "domain": "mesh.test",
            "settings": {"derp": {"regions": [{"id": 900, "code": "t", "nodes": [{
                "host_name": f"{NET}.1", "derp_port": 8443, "stun_port": 3478, "plain_http": True}]}]}}},
        "services.meshctl.derp": {"enable": True, "listen": "0.0.0.0:8443",
                                  "verifyUrl": "http://127.0.0.1:8080/derp/verify",
                                  "verifyTokenFile": "/etc/meshctl/derp-token"},
        "services.meshctl.node": node,
        "services.meshctl.rotation.enable": True,
    }


def _boot(stack: contextlib.ExitStack, nix: Nix, lib: Path, rootfs: Path, work: Path, name: str,
          module: dict[str, Any], seed: Callable[[Path], None]) -> Container:
    """An overlay of the rootfs with the module's units (rendered for `module`), booted in netns `name`."""
    upper, lower_work, root = work / f"{name}-upper", work / f"{name}-work", work / f"{name}-root"
    for d in (upper, lower_work, root):
        d.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={rootfs},upperdir={upper},workdir={lower_work}", str(root)], check=True)
    stack.callback(subprocess.run, ["umount", str(root)], check=False)
    # meshctl from this checkout, run by the container's python with this venv's packages.
    py = f"python{sys.version_info.major}.{sys.version_info.minor}"
    wrapper = root / "usr/local/bin/meshctl"
    wrapper.write_text(f"#!/bin/sh\nexport PYTHONPATH={TOOLKIT}:{VENV / 'lib' / py / 'site-packages'}\n"
                       f"exec /usr/bin/{py} -c 'import sys; from meshctl.cli import main; "
                       "sys.argv[0] = \"meshctl\"; main()' \"$@\"\n")
    wrapper.chmod(0o755)
    (root / "etc/meshctl").mkdir(exist_ok=True)
    seed(root)
    out: dict[str, Any] = nix.eval(f"(import {nix_path(HARNESS)} {{ libPath = {nix_path(lib)}; }}).eval ({to_nix(module)})")
    assert out["assertions"] == []
    for user in out["users"]:  # users.users.* of the module
        subprocess.run(["chroot", str(root), "useradd", "--system", "--user-group", "--no-create-home", user],
                       check=True)
    replace = {FAKE_MESHCTL: "/usr/local/bin/meshctl"}
    for etc_name, entry in out["etc"].items():  # environment.etc, with the generated files' data
        write_toml(root / "etc" / etc_name, entry["settings"])
        replace[entry["path"]] = f"/etc/{etc_name}"
    for unit_name, unit in out["services"].items():
        (root / f"etc/systemd/system/{unit_name}.service").write_text(
            render_unit(unit, replace, path_env=CONTAINER_PATH))

    log = (work / f"{name}-console.log").open("wb")
    stack.callback(log.close)
    proc = subprocess.Popen(
        ["systemd-nspawn", "--quiet", "--boot", "--register=no", "--keep-unit", f"--directory={root}",
         f"--machine={name}", f"--hostname={name}", f"--network-namespace-path=/run/netns/{name}",
         "--capability=CAP_NET_ADMIN,CAP_NET_RAW", "--bind=/dev/net/tun", f"--bind-ro={TOOLKIT}",
         f"--bind-ro={VENV}", "--link-journal=no", "--resolv-conf=off", "--timezone=off", "--console=passive"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # nspawn asks the container's systemd to power off
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    stack.callback(stop)
    deadline = time.monotonic() + 60
    while (leader := _container_init(proc.pid)) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{name} did not boot: " + (work / f"{name}-console.log").read_text()[-2000:])
        time.sleep(0.2)
    box = Container(root, leader)
    # The manager takes start requests once it is past initializing (jobs queue behind the boot).
    box.wait("systemctl show -p SystemState --value | grep -Eq 'starting|running|degraded'", timeout=240)
    return box


@pytest.fixture(scope="module")
def units(nix: Nix, nixpkgs_lib: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Container, Container, str]]:
    """Container `a` (control, DERP, a node, the rotation job) and container `b` (a node), each in a network
    namespace of its own, joined by one veth pair."""
    rootfs = _rootfs()
    work = tmp_path_factory.mktemp("nixunits")
    a, b = f"nxa{os.getpid()}", f"nxb{os.getpid()}"
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        for ns in (a, b):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            stack.callback(subprocess.run, ["ip", "netns", "del", ns], check=False)
        subprocess.run(["ip", "link", "add", a, "netns", a, "type", "veth", "peer", "name", b, "netns", b], check=True)
        for ns, addr in ((a, f"{NET}.1/30"), (b, f"{NET}.2/30")):
            for cmd in (["addr", "add", addr, "dev", ns], ["link", "set", ns, "up"], ["link", "set", "lo", "up"]):
                subprocess.run(["ip", "-n", ns, *cmd], check=True)

        # The pinned control key, made before the nodes' configs (which pin it) are rendered and seeded
        # into the control server's state as the VM test does.
        key_file = work / "control.key"
        keygen = subprocess.run([str(VENV / "bin/meshctl"), "keys", "generate", "control", "--out", str(key_file),
                                 "--json"], capture_output=True, text=True, check=True)
        ctrlkey = json.loads(keygen.stdout)["public"]

        def seed_a(root: Path) -> None:
            state = root / "var/lib/meshctl/control"
            state.mkdir(parents=True, mode=0o700)
            shutil.copy2(key_file, state / "control.key")

        box_a = _boot(stack, nix, nixpkgs_lib, rootfs, work, a, _module(ctrlkey, servers=True), seed_a)
        box_b = _boot(stack, nix, nixpkgs_lib, rootfs, work, b, _module(ctrlkey, servers=False), lambda root: None)
        yield box_a, box_b, ctrlkey


def _peer(box: Container) -> dict[str, Any]:
    peers = json.loads(box.out("meshctl status --json")).get("peers") or []
    assert len(peers) == 1, peers
    return dict(peers[0])


def _wait_path(box: Container, want: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not (path := str(_peer(box).get("path"))).startswith(want):
        if time.monotonic() > deadline:
            raise AssertionError(f"peer path stayed {path!r}, want {want!r}\n" + box.journal())
        time.sleep(1)


def test_nix_units_run_under_systemd(units: tuple[Container, Container, str]) -> None:
    box, other, ctrlkey = units
    # ---- control: runs as its own user with the seeded key; the store belongs to that user.
    box.run("systemctl start meshctl-control.service")
    served = json.loads(other.wait(f"curl -sf http://{NET}.1:8080/key"))
    assert served["controlKey"] == ctrlkey
    assert box.out("stat -c '%U %a' /var/lib/meshctl/control") == "meshctl-control 700"
    assert box.out("stat -c %U /var/lib/meshctl/control/control.db") == "meshctl-control"
    control = box.status(box.pid_of("meshctl-control.service"))
    assert _caps(control["CapBnd"]) == set() and control["NoNewPrivs"] == "1" and control["Seccomp"] == "2"

    # ---- secrets minted on the control host as the service's user, handed over as root-only files.
    local = "runuser -u meshctl-control -- meshctl control {} --config /etc/meshctl/control.toml"
    token = box.out(local.format("derp-token"))
    auth = json.loads(box.out(local.format("authkey") + " --reusable --json"))["key"]
    box.run(f"umask 077; printf %s {token} > /etc/meshctl/derp-token; printf %s {auth} > /etc/meshctl/authkey")
    other.run(f"umask 077; printf %s {auth} > /etc/meshctl/authkey")

    # ---- DERP: reads the token through LoadCredential, asks control before admitting a node.
    box.run("systemctl start meshctl-derp.service")
    other.wait(f"curl -sf -o /dev/null http://{NET}.1:8443/generate_204")
    assert box.out("stat -c '%U %a' /var/lib/meshctl/derp/derp.key") == "meshctl-derp 600"
    derp = box.status(box.pid_of("meshctl-derp.service"))
    assert _caps(derp["CapBnd"]) == set() and derp["Seccomp"] == "2"

    # ---- agents: register with the credentials copy of the auth key, bring up mesh0 with wireguard-go
    # through /dev/net/tun, serve the local API on /run/meshctl/agent.sock.
    addrs = []
    for b in (box, other):
        b.run("systemctl start meshctl-agent.service")
        addrs.append(b.wait("ip -4 -o addr show dev mesh0 | awk '{print $4}' | grep '^100\\.'", timeout=180))
        assert addrs[-1].endswith("/32")
        b.wait("meshctl status")
        assert b.out("stat -c '%U %a' /run/meshctl/agent.sock") == "root 600"
        assert b.out("stat -c '%a' /var/lib/meshctl/agent") == "700"
        agent = b.status(b.pid_of("meshctl-agent.service"))
        assert _caps(agent["CapBnd"]) == {CAP_NET_ADMIN, CAP_NET_RAW, CAP_NET_BIND_SERVICE}
        assert agent["NoNewPrivs"] == "1" and agent["Seccomp"] == "2"
    ip_a, ip_b = (a.split("/")[0] for a in addrs)

    # ---- the two nodes reach each other over the mesh, directly ...
    box.wait(f"ping -c1 -W2 {ip_b}", timeout=180)
    other.wait(f"ping -c1 -W2 {ip_a}", timeout=180)
    _wait_path(box, "direct")
    # ... and through the relay once direct UDP between them is dropped.
    other.run(f"iptables -I OUTPUT -p udp -d {NET}.1 -j DROP && iptables -I INPUT -p udp -s {NET}.1 -j DROP")
    _wait_path(box, "relay")
    box.wait(f"ping -c1 -W2 {ip_b}", timeout=180)
    other.wait(f"ping -c1 -W2 {ip_a}", timeout=180)
    box.wait("journalctl -u meshctl-derp.service | grep -q 'POST http://127.0.0.1:8080/derp/verify \"HTTP/1.1 200'")

    # ---- rotation job: node key not due; the host certificate is issued, installed and sshd reloaded.
    box.run("ssh-keygen -A >/dev/null && systemctl start ssh.service")
    box.run("systemctl start meshctl-rotate.service")
    log = box.out("journalctl -u meshctl-rotate.service --no-pager")
    assert "node-key: not-due" in log and "host-cert: renewed" in log, log
    assert "HostCertificate /etc/ssh/ssh_host_ed25519_key-cert.pub" in box.out(
        "cat /etc/ssh/sshd_config.d/meshctl.conf")

    # ---- a clean stop removes the interface; a restart keeps the registration (no auth key needed).
    box.run("systemctl stop meshctl-agent.service")
    assert box.run("ip link show mesh0", check=False).returncode != 0
    box.run("systemctl start meshctl-agent.service")
    assert box.wait("ip -4 -o addr show dev mesh0 | awk '{print $4}' | grep '^100\\.'", timeout=180) == addrs[0]


def test_nix_agent_first_registration_without_crash(units: tuple[Container, Container, str]) -> None:
    box, _, _ = units
    log = box.out("journalctl -u meshctl-agent.service --no-pager")
    assert "identity: registered" in log or "auth key file consumed" in log or "Traceback" not in log
    assert "Read-only file system" not in log and "Traceback" not in log, log[-3000:]
