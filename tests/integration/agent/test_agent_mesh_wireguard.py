"""WireGuard backend against real wireguard-go in a throwaway namespace (root).

Checks what the daemon relies on: the interface comes up with MTU 1280, mesh addresses and routes;
peer changes are applied in place (same ifindex, WireGuard state kept); the private key never
appears in a command line; an interface left by a crashed run is adopted with its peers; a clean
stop removes it and ends wireguard-go.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .agent_mesh_harness import have_tools

pytestmark = [pytest.mark.integration, pytest.mark.root]

SCRIPT = textwrap.dedent('''
    import asyncio, json, os, subprocess, sys
    from pathlib import Path
    from meshctl.agent.command import SubprocessRunner
    from meshctl.agent.wgbackend import WireGuardInterface
    from meshctl.agent.wgconfig import WgPeer, diff_peers
    from meshctl.keys import NodePrivateKey

    class Recorder(SubprocessRunner):
        def __init__(self):
            self.argv = []
        async def run(self, argv, *, stdin=None, check=True):
            self.argv.append(list(argv))
            return await super().run(argv, stdin=stdin, check=check)

    def sh(*a):
        return subprocess.run(a, capture_output=True, text=True).stdout

    def ifindex(name):
        return json.loads(sh("ip", "-j", "link", "show", "dev", name))[0]["ifindex"]

    async def main():
        out = {}
        key = NodePrivateKey.generate()
        p1, p2 = NodePrivateKey.generate().public_key(), NodePrivateKey.generate().public_key()
        rec = Recorder()
        pid_file = Path(sys.argv[1]) / "wg.pid"
        wg = WireGuardInterface("mesh0", 41641, "userspace", rec, pid_file=pid_file)
        await wg.up(key, ["100.64.0.1/32", "fd7a:115c:a1e0::1/128"])
        out["kind"] = wg.kind
        out["pid_file"] = pid_file.read_text().strip() == str(wg.userspace_pid)
        link = json.loads(sh("ip", "-j", "-d", "link", "show", "dev", "mesh0"))[0]
        out["mtu"] = link["mtu"]
        out["addrs"] = sorted(a["local"] for a in json.loads(sh("ip", "-j", "addr", "show", "dev", "mesh0"))[0]["addr_info"]
                              if not a["local"].startswith("fe80"))
        out["routes"] = sh("ip", "route", "show", "dev", "mesh0") + sh("ip", "-6", "route", "show", "dev", "mesh0")
        out["pubkey_ok"] = sh("wg", "show", "mesh0", "public-key").strip() == key.public_key().to_wireguard_base64()
        out["port"] = sh("wg", "show", "mesh0", "listen-port").strip()
        idx = ifindex("mesh0")
        await wg.apply(diff_peers(wg.peers, [WgPeer(p1, ("100.64.0.2/32",), "127.0.0.1:5000")]))
        await wg.apply(diff_peers(wg.peers, [WgPeer(p1, ("100.64.0.2/32",), "10.0.0.2:41641"),
                                             WgPeer(p2, ("100.64.0.3/32",), "127.0.0.1:5001")]))
        out["same_ifindex_after_peer_changes"] = ifindex("mesh0") == idx
        out["endpoints"] = sorted(sh("wg", "show", "mesh0", "endpoints").split())
        out["keepalive"] = sorted(sh("wg", "show", "mesh0", "persistent-keepalive").split())
        new = NodePrivateKey.generate()
        await wg.set_private_key(new)
        out["rotated_pubkey_ok"] = sh("wg", "show", "mesh0", "public-key").strip() == new.public_key().to_wireguard_base64()
        secrets = {key.to_wireguard_base64(), new.to_wireguard_base64()}
        out["secret_in_argv"] = any(s in " ".join(a) for a in rec.argv for s in secrets)
        # a crash: a new process finds the interface and adopts it
        wg2 = WireGuardInterface("mesh0", 41641, "userspace", SubprocessRunner(), pid_file=pid_file)
        await wg2.up(new, ["100.64.0.1/32"])
        out["reused"] = wg2.reused
        out["adopted_peers"] = len(wg2.peers)
        out["adopted_pid"] = wg2.userspace_pid == wg.userspace_pid
        out["same_ifindex_after_adopt"] = ifindex("mesh0") == idx
        out["no_changes_needed"] = diff_peers(wg2.peers, wg2.peers.values()) == []
        pid = wg2.userspace_pid
        await wg2.down()
        out["gone"] = sh("ip", "link", "show", "dev", "mesh0") == ""
        try:
            os.kill(pid, 0)
            out["wireguard_go_stopped"] = False
        except ProcessLookupError:
            out["wireguard_go_stopped"] = True
        out["pid_file_removed"] = not pid_file.exists()
        print(json.dumps(out))

    asyncio.run(main())
''')


@pytest.mark.skipif(have_tools() is not None, reason=have_tools() or "")
def test_wireguard_interface_lifecycle(tmp_path: Path) -> None:
    script = tmp_path / "wg_lifecycle.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        ["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c",
         'mount -t tmpfs none /run && ip link set lo up && exec "$@"', "sh", sys.executable, str(script), str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["kind"] == "userspace" and out["pid_file"]
    assert out["mtu"] == 1280
    assert out["addrs"] == ["100.64.0.1", "fd7a:115c:a1e0::1"]
    assert "100.64.0.0/10" in out["routes"] and "fd7a:115c:a1e0::/48" in out["routes"]
    assert out["pubkey_ok"] and out["port"] == "41641"
    assert out["same_ifindex_after_peer_changes"]
    assert "10.0.0.2:41641" in out["endpoints"] and "127.0.0.1:5001" in out["endpoints"]
    assert out["keepalive"].count("25") == 2
    assert out["rotated_pubkey_ok"]
    assert out["secret_in_argv"] is False
    assert out["reused"] and out["adopted_peers"] == 2 and out["adopted_pid"]
    assert out["same_ifindex_after_adopt"] and out["no_changes_needed"]
    assert out["gone"] and out["wireguard_go_stopped"] and out["pid_file_removed"]
