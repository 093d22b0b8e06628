"""Benchmark: TCP throughput between two namespaces over WireGuard, by hand and through meshctl (root).

Three measurements with iperf3 in one run, on one machine, same namespaces and bridge:

  (a) baseline: a wireguard-go pair configured by hand with `wg` (no meshctl at all);
  (b) meshctl direct: the same two namespaces joined by `meshctl agent run` (control + DERP running),
      once both sides report a direct path;
  (c) meshctl relayed: the same agents with direct UDP between them dropped by nftables, so WireGuard's
      datagrams go through the agents' relay sockets and a local `meshctl derp serve`.

(a) and (b) alternate for `--rounds` rounds (default 2) and their medians are compared. Prints Mbit/s for
each and the ratios (b)/(a) (goal ≥ 0.95: meshctl adds nothing to a direct path) and
(c)/(b) (the price of relaying through Python and DERP). Default 10 s per measurement (about 70 s in
all); `--seconds N` changes it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.agent.agent_mesh_harness import Mesh, have_tools, sh, wait_for  # noqa: E402


def iperf(mesh: Mesh, client_ns: str, server_ns: str, server_ip: str, seconds: int) -> float:
    """Mbit/s received by the server for one TCP stream of `seconds`."""
    server = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-B", server_ip],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        out = sh(["ip", "netns", "exec", client_ns, "iperf3", "-c", server_ip, "-t", str(seconds), "-J"],
                 timeout=seconds + 30)
        return float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) / 1e6
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()


def hand_made_pair(mesh: Mesh, seconds: int) -> float:
    """(a): wireguard-go + `wg set` in each namespace (its own interface wgh0 and port 51820), keys from
    pynacl, nothing of meshctl's agent in its path."""
    from meshctl.keys import NodePrivateKey

    n1, n2 = mesh.agents["n1"], mesh.agents["n2"]
    keys = {a.name: NodePrivateKey.generate() for a in (n1, n2)}
    procs: list[subprocess.Popen[bytes]] = []
    addr = {"n1": "10.200.0.1", "n2": "10.200.0.2"}
    try:
        for a, b in ((n1, n2), (n2, n1)):
            keyfile = a.dir / "hand.key"
            keyfile.write_text(keys[a.name].to_wireguard_base64() + "\n")
            os.chmod(keyfile, 0o600)
            peer = keys[b.name].public_key().to_wireguard_base64()
            script = (
                "mount -t tmpfs none /run && (WG_PROCESS_FOREGROUND=1 wireguard-go wgh0 &) && "
                "for i in $(seq 100); do [ -S /run/wireguard/wgh0.sock ] && break; sleep 0.05; done && "
                f"wg set wgh0 private-key {keyfile} listen-port 51820 peer {peer} endpoint {b.ip}:51820 "
                f"allowed-ips {addr[b.name]}/32 && ip addr add {addr[a.name]}/24 dev wgh0 && "
                "ip link set wgh0 mtu 1280 up && echo ready && exec sleep 3600")
            p = subprocess.Popen(["ip", "netns", "exec", a.ns, "unshare", "--mount", "--propagation", "private",
                                  "sh", "-c", script], stdout=subprocess.PIPE, start_new_session=True)
            procs.append(p)
            assert p.stdout is not None and p.stdout.readline().strip() == b"ready"
        wait_for("hand-made pair handshake", lambda: subprocess.run(
            ["ip", "netns", "exec", n1.ns, "ping", "-c", "1", "-W", "1", addr["n2"]], capture_output=True,
            check=False).returncode == 0, timeout=15)
        return iperf(mesh, n1.ns, n2.ns, addr["n2"], seconds)
    finally:
        for p in procs:  # the session leader is our child; its group holds wireguard-go
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            p.wait()
        for a in (n1, n2):
            subprocess.run(["ip", "-n", a.ns, "link", "del", "wgh0"], capture_output=True, check=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=10, help="iperf3 duration per measurement [10]")
    ap.add_argument("--rounds", type=int, default=2, help="alternating (a)/(b) rounds [2]")
    args = ap.parse_args()
    reason = have_tools()
    if reason is None and shutil.which("iperf3") is None:
        reason = "needs iperf3"
    if reason is not None:
        print(f"dataplane: skipped: {reason}")
        return 0
    root = Path(tempfile.mkdtemp(prefix="meshctl-bench-dp-"))
    mesh = Mesh(root)
    try:
        mesh.build(2)
        n1, n2 = mesh.agents["n1"], mesh.agents["n2"]
        mesh.start_derp()
        mesh.start_control()
        key = mesh.mint_auth_key()
        for ag in (n1, n2):
            mesh.start_agent(ag, key)
        wait_for("direct path", lambda: n1.peer("n2")["path"] == "direct" and n2.peer("n1")["path"] == "direct",
                 timeout=30)
        ip2 = n2.mesh_ip()
        # (a) and (b) alternate, so load from the rest of the machine falls on both alike; medians reported
        runs_a, runs_b = [], []
        for r in range(args.rounds):
            runs_a.append(hand_made_pair(mesh, args.seconds))
            runs_b.append(iperf(mesh, n1.ns, n2.ns, ip2, args.seconds))
            print(f"round {r + 1}: (a) {runs_a[-1]:.1f}  (b) {runs_b[-1]:.1f} Mbit/s", flush=True)
        a, b = statistics.median(runs_a), statistics.median(runs_b)
        print(f"(a) wireguard-go by hand      {a:9.1f} Mbit/s (median of {args.rounds})", flush=True)
        print(f"(b) meshctl direct            {b:9.1f} Mbit/s (median of {args.rounds})", flush=True)
        mesh.exec(n1.ns, ["nft", "-f", "-"], input=(
            "table inet msbench {\n"
            f"  chain o {{ type filter hook output priority 0; ip daddr {n2.ip} meta l4proto udp drop; }}\n"
            f"  chain i {{ type filter hook input priority 0; ip saddr {n2.ip} meta l4proto udp drop; }}\n}}\n"))
        wait_for("relayed path", lambda: n1.peer("n2")["path"].startswith("relay")
                 and n2.peer("n1")["path"].startswith("relay"), timeout=30)
        wait_for("ping over DERP", lambda: mesh.ping(n1, ip2), timeout=15)
        c = iperf(mesh, n1.ns, n2.ns, ip2, args.seconds)
        print(f"(c) meshctl relayed via DERP  {c:9.1f} Mbit/s", flush=True)
        print(f"(b)/(a) = {b / a:.2f}   (goal >= 0.95)")
        print(f"(c)/(b) = {c / b:.3f}")
        return 0
    except Exception:
        print(mesh.logs(), file=sys.stderr)
        raise
    finally:
        mesh.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
