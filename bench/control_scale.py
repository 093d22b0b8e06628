"""Benchmark: how the control server scales with the number of streaming nodes.

For each N, one `meshctl control serve` process on loopback (SQLite), N simulated nodes (the real
protocol client, no WireGuard) registered and holding map streams in this process. Then:

* per-change propagation: time from a change (endpoint update, new node, node key rotation) until
  every other stream has the frame carrying it, p50/p95 over all receivers;
* server CPU per change: the server process's CPU time (/proc/PID/stat) spent per change;
* growth: per-change server CPU at the largest N over N=500 (the baseline, measured in this run);
  linear work would grow by the N ratio (4x for 500→2000), quadratic by its square;
* reconnect storm: every stream dropped and re-opened at once; time until all have a full map.

Defaults finish in about 2-3 minutes on 2 busy cores: N = 250, 500, 1000. `--full` adds 2000.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from meshctl.control.client import ControlClient
from meshctl.control.config import ControlConfig
from meshctl.control.local import create_auth_key
from meshctl.keys import ControlPublicKey, MachinePrivateKey, NodePrivateKey
from meshctl.wire import HostInfo, MapRequest

CLK_TCK = os.sysconf("SC_CLK_TCK")


def server_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SimNode:
    client: ControlClient
    node_key: NodePrivateKey
    node_id: int = 0
    task: asyncio.Task[None] | None = None
    first_map: asyncio.Event = field(default_factory=asyncio.Event)


class Bench:
    def __init__(self, n: int, changes: int, workdir: Path) -> None:
        self.n = n
        self.changes = changes
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.nodes: list[SimNode] = []
        self.watch: dict[bytes, dict[int, float]] = {}  # marker -> receiver node id -> time seen
        self.transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=None,
                                                                      max_keepalive_connections=None))

    def start_server(self) -> None:
        state = self.workdir / "state"
        cfg = self.workdir / "control.toml"
        cfg.write_text(f'listen = "127.0.0.1:{self.port}"\nstate_dir = "{state}"\ndomain = "bench.test"\n'
                       f'keepalive_interval = "600s"\n')
        self.authkey = create_auth_key(ControlConfig(state_dir=state), reusable=True, ephemeral=False, tags=[],
                                       expiry=3600.0)["key"]
        meshctl = str(Path(sys.executable).with_name("meshctl"))
        self.log = (self.workdir / "server.log").open("w")
        self.proc = subprocess.Popen([meshctl, "control", "serve", "--config", str(cfg)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                raise SystemExit(f"server did not start: {(self.workdir / 'server.log').read_text()}")
            time.sleep(0.1)
        self.control_pub = ControlPublicKey.from_text((state / "control.pub").read_text())

    def stop_server(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def new_client(self) -> ControlClient:
        return ControlClient(self.url, self.control_pub, MachinePrivateKey.generate(), transport=self.transport,
                             timeout=60, stream_read_timeout=900)

    async def register_all(self) -> float:
        sem = asyncio.Semaphore(32)

        async def one(i: int) -> SimNode:
            async with sem:
                sim = SimNode(self.new_client(), NodePrivateKey.generate())
                res = await sim.client.register(sim.node_key, auth_key=self.authkey, hostinfo=HostInfo(f"sim{i}"))
                assert res.node is not None
                sim.node_id = res.node.id
                return sim

        t = time.perf_counter()
        self.nodes = list(await asyncio.gather(*(one(i) for i in range(self.n))))
        return time.perf_counter() - t

    async def _consume(self, sim: SimNode, port: int) -> None:
        req = MapRequest(node_key=sim.node_key.public_key(), endpoints=(f"192.0.2.1:{port}",), home_derp=900)
        first = True
        async for plain in sim.client.map_stream_raw(req):
            if first:
                first = False
                sim.first_map.set()
                continue
            now = time.perf_counter()
            for marker, seen in self.watch.items():
                if sim.node_id not in seen and marker in plain:
                    seen[sim.node_id] = now

    async def open_streams(self) -> float:
        t = time.perf_counter()
        for i, sim in enumerate(self.nodes):
            sim.first_map = asyncio.Event()
            sim.task = asyncio.create_task(self._consume(sim, 10000 + i))
        await asyncio.gather(*(s.first_map.wait() for s in self.nodes))
        return time.perf_counter() - t

    async def drop_streams(self) -> None:
        for sim in self.nodes:
            assert sim.task is not None
            sim.task.cancel()
        await asyncio.gather(*(s.task for s in self.nodes if s.task), return_exceptions=True)

    async def wait_quiet(self, seconds: float = 0.5) -> None:
        """Let the server drain queued frames (e.g. online patches) before measuring."""
        last = -1.0
        while True:
            await asyncio.sleep(seconds)
            cpu = server_cpu(self.proc.pid)
            if cpu - last < seconds * 0.05:
                return
            last = cpu

    async def one_change(self, kind: str, k: int) -> tuple[list[float], float]:
        receivers = {s.node_id for s in self.nodes}
        if kind == "endpoint":
            sim = random.choice(self.nodes)
            ep = f"198.18.{k // 250}.{k % 250 + 1}:{40000 + k}"
            marker = ep.encode()
            receivers.discard(sim.node_id)
            action = sim.client.update(MapRequest(node_key=sim.node_key.public_key(), endpoints=(ep,), home_derp=900))
        elif kind == "new-node":
            name = f"newnode{k}x"
            marker = f'"name":"{name}"'.encode()
            action = self._register_new(name)
        else:
            sim = random.choice(self.nodes)
            new = NodePrivateKey.generate()
            marker = new.public_key().to_text().encode()
            receivers.discard(sim.node_id)
            action = self._rotate(sim, new)
        seen: dict[int, float] = {}
        self.watch[marker] = seen
        cpu0 = server_cpu(self.proc.pid)
        t0 = time.perf_counter()
        await action
        deadline = time.monotonic() + 60
        while not receivers <= seen.keys():
            if time.monotonic() > deadline:
                raise SystemExit(f"{kind} change reached only {len(seen)}/{len(receivers)} streams in 60 s")
            await asyncio.sleep(0.002)
        cpu1 = server_cpu(self.proc.pid)
        del self.watch[marker]
        return [seen[r] - t0 for r in receivers], cpu1 - cpu0

    async def _register_new(self, name: str) -> None:
        c = self.new_client()
        await c.register(NodePrivateKey.generate(), auth_key=self.authkey, hostinfo=HostInfo(name))

    async def _rotate(self, sim: SimNode, new: NodePrivateKey) -> None:
        await sim.client.register(new, old_node_key=sim.node_key, hostinfo=HostInfo("rotated"))
        sim.node_key = new

    async def run(self) -> dict[str, object]:
        self.start_server()
        try:
            reg_s = await self.register_all()
            open_s = await self.open_streams()
            await self.wait_quiet()
            per_kind: dict[str, dict[str, float]] = {}
            all_cpu: list[float] = []
            for kind in ("endpoint", "new-node", "rotation"):
                lat: list[float] = []
                cpus: list[float] = []
                for k in range(self.changes):
                    got, cpu = await self.one_change(kind, len(all_cpu) + k)
                    lat += got
                    cpus.append(cpu)
                    await asyncio.sleep(0.05)
                all_cpu += cpus
                qs = statistics.quantiles(lat, n=20)
                per_kind[kind] = {"p50_ms": statistics.median(lat) * 1e3, "p95_ms": qs[18] * 1e3,
                                  "cpu_ms": statistics.mean(cpus) * 1e3}
            await self.wait_quiet()
            await self.drop_streams()
            await asyncio.sleep(1.0)  # let the server notice the disconnects
            cpu0 = server_cpu(self.proc.pid)
            storm_s = await self.open_streams()
            storm_cpu = server_cpu(self.proc.pid) - cpu0
            await self.drop_streams()
            return {"n": self.n, "register_s": reg_s, "first_streams_s": open_s, "kinds": per_kind,
                    "cpu_per_change_ms": statistics.mean(all_cpu) * 1e3, "storm_s": storm_s,
                    "storm_server_cpu_s": storm_cpu}
        finally:
            await self.transport.aclose()
            self.stop_server()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="250,500,1000", help="comma-separated node counts")
    ap.add_argument("--full", action="store_true", help="add N=2000")
    ap.add_argument("--changes", type=int, default=5, help="changes of each kind per N")
    ap.add_argument("--json", action="store_true", help="print results as JSON")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    if args.full and 2000 not in sizes:
        sizes.append(2000)
    results = []
    for n in sizes:
        work = Path(tempfile.mkdtemp(prefix=f"meshctl-bench-{n}-"))
        try:
            r = asyncio.run(Bench(n, args.changes, work).run())
        finally:
            shutil.rmtree(work, ignore_errors=True)
        results.append(r)
        if not args.json:
            print(f"N={n}: registered in {r['register_s']:.1f} s, first maps in {r['first_streams_s']:.1f} s",
                  flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print()
    print(f"{'N':>6} {'change':<9} {'p50 ms':>8} {'p95 ms':>8} {'srv CPU ms':>11}")
    for r in results:
        for kind, v in r["kinds"].items():  # type: ignore[attr-defined]
            print(f"{r['n']:>6} {kind:<9} {v['p50_ms']:>8.1f} {v['p95_ms']:>8.1f} {v['cpu_ms']:>11.2f}")
    print()
    print(f"{'N':>6} {'CPU/change ms':>14} {'reconnect storm s':>18} {'storm server CPU s':>19}")
    for r in results:
        print(f"{r['n']:>6} {r['cpu_per_change_ms']:>14.2f} {r['storm_s']:>18.2f} {r['storm_server_cpu_s']:>19.2f}")
    base = next((r for r in results if r["n"] == 500), results[0])
    top = results[-1]
    if top is not base:
        growth = top["cpu_per_change_ms"] / base["cpu_per_change_ms"]  # type: ignore[operator]
        n_ratio = top["n"] / base["n"]  # type: ignore[operator]
        print(f"\nper-change CPU growth N={base['n']}→{top['n']}: {growth:.2f}x "
              f"(linear would be {n_ratio:.0f}x, quadratic {n_ratio ** 2:.0f}x)")


if __name__ == "__main__":
    main()
