"""The WireGuard interface: kernel WireGuard when the kernel has it, wireguard-go otherwise (shell).

`up()` creates (or, after a crash, reuses) the interface, hands it the node private key on stdin
(never argv), sets the listen port, MTU 1280, the node's mesh addresses and the routes for the mesh
prefixes. Peer changes go through `apply()` as one `wg set` of diff arguments; the interface is
never recreated for them. `down()` removes the interface and stops wireguard-go by its PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..keys import NodePrivateKey, NodePublicKey
from .command import CommandRunner, SubprocessRunner
from .errors import WireGuardError
from .wgconfig import PeerChange, WgPeer, apply_changes, set_args

__all__ = ["MESH_ROUTES", "MTU", "Backend", "PeerStats", "WireGuardInterface", "parse_dump"]

log = logging.getLogger(__name__)

MTU = 1280
MESH_ROUTES = ("100.64.0.0/10", "fd7a:115c:a1e0::/48")
Backend = Literal["auto", "kernel", "userspace"]
UAPI_DIR = Path("/var/run/wireguard")


@dataclass(frozen=True)
class PeerStats:
    """One peer as WireGuard reports it (`wg show IFACE dump`)."""

    public_key: NodePublicKey
    endpoint: str | None
    allowed_ips: tuple[str, ...]
    last_handshake: int | None
    rx_bytes: int
    tx_bytes: int
    keepalive: int


def parse_dump(text: str) -> dict[NodePublicKey, PeerStats]:
    """Peers from `wg show IFACE dump`. The first line (the interface, with its private key) is skipped
    without being kept anywhere."""
    peers: dict[NodePublicKey, PeerStats] = {}
    for line in text.splitlines()[1:]:
        f = line.split("\t")
        if len(f) < 8:
            continue
        key = NodePublicKey.from_wireguard_base64(f[0])
        ips = tuple(sorted(ip for ip in f[3].split(",") if ip and ip != "(none)"))
        peers[key] = PeerStats(
            key, None if f[2] == "(none)" else f[2], ips,
            int(f[4]) or None, int(f[5]), int(f[6]), 0 if f[7] == "off" else int(f[7]),
        )
    return peers


class WireGuardInterface:
    """One WireGuard interface driven by `ip` and `wg`. Keeps its own view of the peers it set."""

    def __init__(self, name: str, listen_port: int, backend: Backend = "auto", runner: CommandRunner | None = None,
                 pid_file: Path | None = None) -> None:
        self.name, self.listen_port, self.backend = name, listen_port, backend
        self.runner = runner or SubprocessRunner()
        self.pid_file = pid_file
        self.kind: Literal["kernel", "userspace"] | None = None
        self.userspace_pid: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self.peers: dict[NodePublicKey, WgPeer] = {}
        self.reused = False

    async def exists(self) -> bool:
        code, _ = await self.runner.run(["ip", "link", "show", "dev", self.name], check=False)
        return code == 0

    async def up(self, private_key: NodePrivateKey, addresses: Sequence[str]) -> None:
        if await self.exists():
            await self._adopt()
        else:
            await self._create()
        await self.set_private_key(private_key)
        await self.runner.run(["wg", "set", self.name, "listen-port", str(self.listen_port)])
        await self.runner.run(["ip", "link", "set", "dev", self.name, "mtu", str(MTU), "up"])
        for addr in addresses:
            iface = ipaddress.ip_interface(addr)
            host = f"{iface.ip}/{iface.max_prefixlen}"
            await self.runner.run(["ip", f"-{iface.version}", "addr", "replace", host, "dev", self.name])
        for route in MESH_ROUTES:
            fam = "-6" if ":" in route else "-4"
            await self.runner.run(["ip", fam, "route", "replace", route, "dev", self.name])

    async def _create(self) -> None:
        if self.backend in ("auto", "kernel"):
            code, _ = await self.runner.run(["ip", "link", "add", "dev", self.name, "type", "wireguard"], check=False)
            if code == 0:
                self.kind = "kernel"
                log.info("wireguard: created %s (kernel)", self.name)
                return
            if self.backend == "kernel":
                raise WireGuardError(f"cannot create kernel WireGuard interface {self.name}",
                                     hint="load the wireguard module, or set backend = \"userspace\"")
        await self._start_userspace()

    async def _start_userspace(self) -> None:
        env = dict(os.environ, WG_PROCESS_FOREGROUND="1")
        try:
            proc = await asyncio.create_subprocess_exec(
                "wireguard-go", self.name, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
        except FileNotFoundError:
            raise WireGuardError("wireguard-go not found and the kernel has no WireGuard",
                                 hint="install wireguard-go (apt-get install wireguard-go)") from None
        self.userspace_pid, self.kind, self._proc = proc.pid, "userspace", proc
        if self.pid_file is not None:
            self.pid_file.parent.mkdir(parents=True, exist_ok=True)
            self.pid_file.write_text(f"{proc.pid}\n")
        sock = UAPI_DIR / f"{self.name}.sock"
        for _ in range(100):  # wireguard-go creates its UAPI socket a moment after the TUN device
            if sock.exists() and await self.exists():
                log.info("wireguard: started wireguard-go for %s (pid %d)", self.name, proc.pid)
                return
            if proc.returncode is not None:
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), 0.05)
        raise WireGuardError(f"wireguard-go did not bring up {self.name} (no {sock})",
                             hint="is /dev/net/tun present and do we have CAP_NET_ADMIN?")

    async def _adopt(self) -> None:
        """A previous run crashed and left the interface: keep it (and its sessions), learn its peers."""
        self.reused = True
        _, out = await self.runner.run(["ip", "-d", "link", "show", "dev", self.name], check=False)
        self.kind = "kernel" if "wireguard" in out else "userspace"
        if self.kind == "userspace" and self.pid_file is not None and self.pid_file.exists():
            with contextlib.suppress(ValueError):
                self.userspace_pid = int(self.pid_file.read_text().strip())
        self.peers = {k: WgPeer(k, s.allowed_ips, s.endpoint, s.keepalive) for k, s in (await self.dump()).items()}
        log.info("wireguard: reusing %s left by a previous run (%s, %d peers)", self.name, self.kind, len(self.peers))

    async def set_private_key(self, key: NodePrivateKey) -> None:
        await self.runner.run(["wg", "set", self.name, "private-key", "/dev/stdin"],
                              stdin=key.to_wireguard_base64().encode() + b"\n")

    async def apply(self, changes: Sequence[PeerChange]) -> None:
        if not changes:
            return
        await self.runner.run(["wg", "set", self.name, *set_args(changes)])
        self.peers = apply_changes(self.peers, changes)

    async def dump(self) -> dict[NodePublicKey, PeerStats]:
        _, out = await self.runner.run(["wg", "show", self.name, "dump"])
        return parse_dump(out)

    async def down(self) -> None:
        await self.runner.run(["ip", "link", "del", "dev", self.name], check=False)
        if self._proc is not None:  # our child: terminate and reap it
            with contextlib.suppress(ProcessLookupError):
                self._proc.terminate()
            try:
                await asyncio.wait_for(self._proc.wait(), 3.0)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        elif self.userspace_pid is not None:  # adopted from a crashed run: by PID, poll until gone
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.userspace_pid, signal.SIGTERM)
                for _ in range(60):
                    os.kill(self.userspace_pid, 0)
                    await asyncio.sleep(0.05)
        self._proc, self.userspace_pid = None, None
        if self.pid_file is not None:
            self.pid_file.unlink(missing_ok=True)
        self.peers = {}
