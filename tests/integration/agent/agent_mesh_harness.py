"""A throwaway mesh for agent integration tests: network namespaces, a bridge, real servers and agents.

Topology (all names carry the test process id, so parallel runs never collide):

    hub namespace:  bridge br0 10.99.0.1/24 — `meshctl control serve` :8080, `meshctl derp serve` :8443 + STUN :3478
    node namespaces n1..nN: eth0 10.99.0.1N/24 on the bridge; `meshctl agent run` with wireguard-go

Every process runs under `ip netns exec NS unshare --mount` with a private tmpfs on /run (so
wireguard-go's UAPI sockets and /run/meshctl never collide) and is stopped by its PID. Namespaces,
processes and files are removed in `close()`, which the fixtures call in `finally`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MESHCTL = str(Path(sys.executable).with_name("meshctl"))
HUB_IP = "10.99.0.1"
SUBNET = "10.99.0.0/24"


def sh(argv: Sequence[str], *, check: bool = True, timeout: float = 30, input: str | None = None) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False, input=input)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def wait_for(what: str, pred: Callable[[], Any], timeout: float = 30.0, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except Exception as err:
            last = err
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        return self.popen.returncode

    def tail(self, n: int = 30) -> str:
        try:
            lines = [ln for ln in self.log.read_text(errors="replace").splitlines() if " DEBUG " not in ln]
            return "\n".join(lines[-n:])
        except OSError:
            return ""


@dataclass
class Agent:
    name: str
    ns: str
    ip: str
    dir: Path
    proc: Proc | None = None
    wan: str = ""  # the NAT router's address, for a node behind one

    @property
    def socket(self) -> Path:
        return self.dir / "agent.sock"

    def status(self) -> dict[str, Any]:
        from meshctl.agent import localclient

        return localclient.status(self.socket)

    def mesh_ip(self) -> str:
        return str(self.status()["self"]["addresses"][0]).split("/")[0]

    def peer(self, name: str) -> dict[str, Any]:
        for p in self.status()["peers"]:
            if p["name"] == name:
                return dict(p)
        raise KeyError(name)


@dataclass
class Mesh:
    root: Path
    tag: str = field(default_factory=lambda: f"ms{os.getpid()}")
    namespaces: list[str] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)
    agents: dict[str, Agent] = field(default_factory=dict)
    control: Proc | None = None
    derp: Proc | None = None
    regions: list[int] = field(default_factory=list)
    agent_extra: dict[str, str] = field(default_factory=dict)  # agent name -> extra TOML lines
    control_key: str = ""
    admin_key: str = ""

    @property
    def hub(self) -> str:
        return f"{self.tag}hub"

    # -- namespaces --------------------------------------------------------------------------
    def add_ns(self, name: str) -> str:
        sh(["ip", "netns", "add", name])
        self.namespaces.append(name)
        sh(["ip", "-n", name, "link", "set", "lo", "up"])
        return name

    def build(self, n: int) -> None:
        self.add_ns(self.hub)
        sh(["ip", "-n", self.hub, "link", "add", "br0", "type", "bridge"])
        sh(["ip", "-n", self.hub, "addr", "add", f"{HUB_IP}/24", "dev", "br0"])
        sh(["ip", "-n", self.hub, "link", "set", "br0", "up"])
        for i in range(1, n + 1):
            ns = self.add_ns(f"{self.tag}n{i}")
            ip = f"10.99.0.{10 + i}"
            sh(["ip", "-n", self.hub, "link", "add", f"vh{i}", "type", "veth", "peer", "name", "eth0", "netns", ns])
            sh(["ip", "-n", self.hub, "link", "set", f"vh{i}", "master", "br0", "up"])
            sh(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0"])
            sh(["ip", "-n", ns, "link", "set", "eth0", "up"])
            d = self.root / f"n{i}"
            d.mkdir(mode=0o700)
            self.agents[f"n{i}"] = Agent(f"n{i}", ns, ip, d)

    def add_natted(self, name: str, index: int, kind: str) -> Agent:
        """A node behind its own NAT router on the bridge: `easy` = masquerade keeping ports (endpoint-
        independent mapping), `hard` = masquerade fully-random (a new random port per destination)."""
        router = self.add_ns(f"{self.tag}r{index}")
        ns = self.add_ns(f"{self.tag}{name}")
        wan = f"10.99.0.{20 + index}"
        sh(["ip", "-n", self.hub, "link", "add", f"vr{index}", "type", "veth", "peer", "name", "eth0",
            "netns", router])
        sh(["ip", "-n", self.hub, "link", "set", f"vr{index}", "master", "br0", "up"])
        sh(["ip", "-n", router, "addr", "add", f"{wan}/24", "dev", "eth0"])
        sh(["ip", "-n", router, "link", "set", "eth0", "up"])
        sh(["ip", "-n", router, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", ns])
        sh(["ip", "-n", router, "addr", "add", f"192.168.{index}.1/24", "dev", "lan0"])
        sh(["ip", "-n", router, "link", "set", "lan0", "up"])
        sh(["ip", "-n", ns, "addr", "add", f"192.168.{index}.2/24", "dev", "eth0"])
        sh(["ip", "-n", ns, "link", "set", "eth0", "up"])
        sh(["ip", "-n", ns, "route", "add", "default", "via", f"192.168.{index}.1"])
        self.exec(router, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        how = "masquerade fully-random" if kind == "hard" else "masquerade"
        self.exec(router, ["nft", "-f", "-"], input=(
            "table ip nat {\n  chain post {\n    type nat hook postrouting priority 100;\n"
            f"    oifname \"eth0\" {how}\n  }}\n}}\n"))
        d = self.root / name
        d.mkdir(mode=0o700)
        a = Agent(name, ns, f"192.168.{index}.2", d)
        a.wan = wan
        self.agents[name] = a
        return a

    def spawn(self, ns: str, name: str, argv: Sequence[str], wg_dir: Path | None = None) -> Proc:
        """Run argv in `ns` with a private /run; `wg_dir` (kept across restarts of one agent) becomes
        /run/wireguard, so an agent restarted after a crash finds wireguard-go's UAPI socket again."""
        log = self.root / f"{name}.log"
        f = log.open("ab")
        setup = "mount -t tmpfs none /run"
        if wg_dir is not None:
            wg_dir.mkdir(mode=0o700, exist_ok=True)
            setup += f" && mkdir -p /run/wireguard && mount --bind {wg_dir} /run/wireguard"
            # the agent manages /etc/resolv.conf (MagicDNS): give it a private copy, never the host's
            resolv = wg_dir.parent / "resolv.conf"
            if not resolv.exists():
                resolv.write_text("nameserver 192.0.2.53\n")
            setup += f" && mount --bind {resolv} /etc/resolv.conf"
        wrapped = ["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private",
                   "sh", "-c", setup + ' && exec "$@"', "sh", *argv]
        p = Proc(name, subprocess.Popen(wrapped, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL), log)
        f.close()
        self.procs.append(p)
        return p

    def exec(self, ns: str, argv: Sequence[str], **kw: Any) -> str:
        return sh(["ip", "netns", "exec", ns, *argv], **kw)

    # -- servers -------------------------------------------------------------------------------
    def start_control(self) -> None:
        cdir = self.root / "control"
        cdir.mkdir(mode=0o700, exist_ok=True)
        cfg = cdir / "control.toml"
        cfg.write_text(f'''listen = "{HUB_IP}:8080"
state_dir = "{cdir}/state"
db = "sqlite:///{cdir}/state/control.db"
domain = "mesh.test"
keepalive_interval = "10s"

{self._regions_toml()}''')
        self.control = self.spawn(self.hub, "control", control_serve_argv(cfg))
        pub = cdir / "state" / "control.pub"
        wait_for("control server up", lambda: self.control is not None and self.control.alive() and pub.exists()
                 and self._http_ok(f"http://{HUB_IP}:8080/key"), timeout=30)
        self.control_key = pub.read_text().strip()

    def _regions_toml(self) -> str:
        out = ""
        for region in self.regions or [900]:
            off = region - 900
            out += (f'[[derp.regions]]\nid = {region}\ncode = "r{region}"\nname = "Region {region}"\n'
                    f'  [[derp.regions.nodes]]\n  name = "{region}a"\n  host_name = "{HUB_IP}"\n'
                    f'  ipv4 = "{HUB_IP}"\n  derp_port = {8443 + off}\n  stun_port = {3478 + off}\n'
                    '  plain_http = true\n')
        return out

    def _http_ok(self, url: str) -> bool:
        out = subprocess.run(["ip", "netns", "exec", self.hub, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                              "--max-time", "2", url], capture_output=True, text=True, check=False).stdout
        return out.strip() == "200"

    def restart_control(self) -> None:
        assert self.control is not None
        self.control.stop()
        self.procs.remove(self.control)
        self.start_control()

    def start_derp(self, region: int = 900) -> None:
        """A DERP relay (+ STUN) for `region`: region 900 on :8443/:3478, 901 on :8444/:3479, …"""
        off = region - 900
        ddir = self.root / f"derp{region}"
        ddir.mkdir(mode=0o700, exist_ok=True)
        proc = self.spawn(self.hub, "derp" if region == 900 else f"derp{region}", [
            MESHCTL, "derp", "serve", "--listen", f"{HUB_IP}:{8443 + off}", "--stun-listen", f"{HUB_IP}:{3478 + off}",
            "--key-file", str(ddir / "derp.key"), "--region-id", str(region)])
        if region == 900:
            self.derp = proc
        if region not in self.regions:
            self.regions.append(region)
        wait_for("DERP server up", lambda: self._http_ok(f"http://{HUB_IP}:{8443 + off}/generate_204")
                 or self._http_ok(f"http://{HUB_IP}:{8443 + off}/derp/probe"), timeout=30)

    def mint_auth_key(self, reusable: bool = True) -> str:
        from meshctl.control.config import load_config
        from meshctl.control.local import create_auth_key

        cfg = load_config(self.root / "control" / "control.toml")
        return str(create_auth_key(cfg, reusable=reusable, ephemeral=False, tags=[], expiry=3600)["key"])

    # -- agents --------------------------------------------------------------------------------
    def write_agent_config(self, a: Agent, auth_key: str | None) -> Path:
        state = a.dir / "state"
        if auth_key is not None:
            (a.dir / "authkey").write_text(auth_key + "\n")
            os.chmod(a.dir / "authkey", 0o600)
        cfg = a.dir / "agent.toml"
        cfg.write_text(f'''control_url = "http://{HUB_IP}:8080"
control_key = "{self.control_key}"
state_dir = "{state}"
auth_key_file = "{a.dir}/authkey"
interface = "mesh0"
backend = "userspace"
socket = "{a.socket}"
hostname = "{a.name}"
magic_dns = true
packet_filter = true
''' + self.agent_extra.get(a.name, ""))
        return cfg

    def start_agent(self, a: Agent, auth_key: str | None = None) -> None:
        cfg = self.write_agent_config(a, auth_key)
        a.proc = self.spawn(a.ns, f"agent-{a.name}", [MESHCTL, "agent", "run", "--config", str(cfg), "-v"],
                            wg_dir=a.dir / "wgrun")
        try:
            wait_for(f"agent {a.name} local API", lambda: a.proc is not None and a.proc.alive() and a.socket.exists()
                     and a.status()["self"]["addresses"], timeout=60)
        except AssertionError as err:
            raise AssertionError(f"{err}\n--- agent {a.name} log ---\n{a.proc.tail(60)}\n--- control log ---\n"
                                 f"{self.control.tail(20) if self.control else ''}") from None

    def stop_agent(self, a: Agent, sig: int = signal.SIGTERM) -> int | None:
        assert a.proc is not None
        rc = a.proc.stop(sig)
        self.procs.remove(a.proc)
        a.proc = None
        return rc

    def ping(self, a: Agent, ip: str, count: int = 1, timeout: float = 2) -> bool:
        done = subprocess.run(["ip", "netns", "exec", a.ns, "ping", "-n", "-c", str(count), "-W", str(int(timeout)),
                               ip], capture_output=True, text=True, check=False)
        return done.returncode == 0

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.tail()}" for p in self.procs)

    def wireguard_go_pid(self, a: Agent) -> int | None:
        f = a.dir / "state" / "wireguard-go.mesh0.pid"
        try:
            return int(f.read_text().strip())
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.procs.clear()
        for a in self.agents.values():
            # a SIGKILLed agent leaves wireguard-go behind, and it outlives its namespace: stop it by PID,
            # after checking the PID still is a wireguard-go (PIDs wrap)
            pid = self.wireguard_go_pid(a)
            if pid is not None:
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "wireguard-go":
                        os.kill(pid, signal.SIGTERM)
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        self.namespaces.clear()


def control_serve_argv(cfg: Path) -> list[str]:
    """`meshctl control serve --config CFG`, or the same library call while that command is not wired yet."""
    done = subprocess.run([MESHCTL, "control", "serve", "--help"], capture_output=True, check=False)
    if done.returncode == 0:
        return [MESHCTL, "control", "serve", "--config", str(cfg)]
    return [sys.executable, "-c", "import sys, pathlib; from meshctl.control.config import load_config; "
            "from meshctl.control.server import serve; serve(load_config(pathlib.Path(sys.argv[1])))", str(cfg)]


def have_tools() -> str | None:
    """Why the mesh cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, wireguard-go)"
    for tool in ("ip", "wg", "wireguard-go", "unshare", "nft", "curl", "ping"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if not Path("/dev/net/tun").exists():
        return "needs /dev/net/tun"
    return None


@contextlib.contextmanager
def mesh_lifecycle(prefix: str) -> Iterator[Mesh]:
    """A Mesh in a fresh temp dir for a module fixture: skips without the tools, prints every log when
    set-up fails, and always stops every process and removes the dir."""
    import pytest

    reason = have_tools()
    if reason is not None:
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix=prefix))
    m = Mesh(root)
    try:
        yield m
    except BaseException:
        print(m.logs())
        raise
    finally:
        m.close()
        shutil.rmtree(root, ignore_errors=True)
