"""Host DNS in systemd-resolved mode against a real systemd-resolved: a throwaway systemd-nspawn container
(overlay of the lab's cached rootfs plus Debian's systemd-resolved package, fetched with `apt-get download`)
runs MagicDNS and HostDns from this checkout; `resolvectl query` must get mesh names from MagicDNS through
the per-link configuration, and `restore()` must undo it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import meshctl

from .test_agent_svc_netns import boot, enable_unit, overlay_rootfs

pytestmark = [
    pytest.mark.integration,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount an overlay and boot a container"),
]

PROBE = r'''
import asyncio, json, subprocess
from meshctl.agent.dns import MagicDNS
from meshctl.agent.resolvconf import HostDns

def sh(*argv):
    done = subprocess.run(list(argv), capture_output=True, text=True)
    return {"rc": done.returncode, "out": done.stdout, "err": done.stderr}

async def main():
    result = {}
    # mesh0 as the agent leaves it: up, a mesh address, the mesh route
    for argv in (["ip", "link", "add", "mesh0", "type", "veth", "peer", "name", "mesh1"],
                 ["ip", "link", "set", "mesh0", "up"], ["ip", "link", "set", "mesh1", "up"],
                 ["ip", "addr", "add", "100.64.0.1/32", "dev", "mesh0"],
                 ["ip", "route", "add", "100.64.0.0/10", "dev", "mesh0"]):
        subprocess.run(argv, check=True)
    host = HostDns("corp.mesh", "mesh0")
    result["mode"] = host.mode
    magic = MagicDNS("corp.mesh", host.upstreams())
    magic.update_names({"web": ["100.64.0.2", "fd7a:115c:a1e0::2"]})
    await magic.start()
    await asyncio.to_thread(host.apply)
    result["query"] = await asyncio.to_thread(sh, "resolvectl", "query", "web.corp.mesh")
    result["ghost"] = await asyncio.to_thread(sh, "resolvectl", "query", "ghost.corp.mesh")
    result["status"] = sh("resolvectl", "status", "mesh0")
    await asyncio.to_thread(host.restore)
    await magic.close()
    result["after"] = sh("resolvectl", "status", "mesh0")
    result["addr_after"] = sh("ip", "addr", "show", "dev", "mesh0")
    json.dump(result, open("/out/result.json", "w"))

asyncio.run(main())
'''

RUNNER = """[Unit]
After=systemd-resolved.service dbus.service
Wants=systemd-resolved.service
[Service]
Type=oneshot
ExecStart=/bin/sh -c '{python} /usr/local/lib/svc-resolved-probe.py > /out/probe.log 2>&1; systemctl poweroff'
[Install]
WantedBy=multi-user.target
"""


def _systemd_version(root: Path) -> str | None:
    package = None
    for line in (root / "var/lib/dpkg/status").read_text().splitlines():
        if line.startswith("Package: "):
            package = line.split(": ", 1)[1]
        elif package == "systemd" and line.startswith("Version: "):
            return line.split(": ", 1)[1]
    return None


@pytest.fixture
def resolved_container() -> Iterator[Path]:
    with overlay_rootfs() as work:
        root = work / "merged"
        version = _systemd_version(root)
        debs = Path(tempfile.mkdtemp(prefix="msvc-deb-"))
        try:
            done = subprocess.run(["apt-get", "download", f"systemd-resolved={version}"], cwd=debs,
                                  capture_output=True, text=True, timeout=120, check=False)
            found = list(debs.glob("systemd-resolved_*.deb"))
            if done.returncode != 0 or not found:
                pytest.skip(f"cannot fetch systemd-resolved {version} from a Debian mirror: {done.stderr.strip()}")
            stage = debs / "stage"
            subprocess.run(["dpkg-deb", "-x", str(found[0]), str(stage)], check=True)
            # The rootfs is usr-merged: /lib and /sbin are symlinks that a plain extraction would replace.
            for top in ("lib", "sbin", "bin"):
                if (stage / top).is_dir():
                    shutil.copytree(stage / top, root / "usr" / top, symlinks=True, dirs_exist_ok=True)
            for top in ("usr", "etc"):
                if (stage / top).is_dir():
                    shutil.copytree(stage / top, root / top, symlinks=True, dirs_exist_ok=True)
        finally:
            shutil.rmtree(debs, ignore_errors=True)
        yield work


def test_resolvectl_gets_mesh_names_from_magicdns_through_the_mesh_link(resolved_container: Path) -> None:
    root = resolved_container / "merged"
    (root / "usr/local/lib").mkdir(parents=True, exist_ok=True)
    (root / "usr/local/lib/svc-resolved-probe.py").write_text(PROBE)
    enable_unit(root, "systemd-resolved.service")
    # as the package's postinst leaves it: libc asks resolved's stub
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/resolv.conf").symlink_to("../run/systemd/resolve/stub-resolv.conf")
    (root / "etc/systemd/system/dbus-org.freedesktop.resolve1.service").symlink_to(
        "/usr/lib/systemd/system/systemd-resolved.service")
    enable_unit(root, "svc-resolved-probe.service", RUNNER.format(python=sys.executable))
    # This checkout and its interpreter, read-only at the same paths inside the container.
    repo = Path(meshctl.__file__).resolve().parents[2]
    binds = {repo, Path(sys.prefix), Path(sys.base_prefix)}
    boot(resolved_container, *(f"--bind-ro={path}" for path in sorted(binds)))

    out = resolved_container / "out"
    log = (out / "probe.log").read_text() if (out / "probe.log").exists() else "(no probe log)"
    assert (out / "result.json").exists(), log
    result = json.loads((out / "result.json").read_text())
    assert result["mode"] == "resolved"
    assert result["query"]["rc"] == 0, result["query"]
    answer = result["query"]["out"]
    assert answer.startswith("web.corp.mesh: ") and "100.64.0.2" in answer and "fd7a:115c:a1e0::2" in answer
    assert result["ghost"]["rc"] != 0 and "not found" in result["ghost"]["err"]
    status = result["status"]["out"]
    assert "DNS Servers: 100.100.100.100" in status and "DNS Domain: ~corp.mesh" in status
    assert "-DefaultRoute" in status  # only mesh names are routed to MagicDNS
    assert "100.100.100.100" not in result["after"]["out"]
    assert "100.100.100.100" not in result["addr_after"]["out"]
