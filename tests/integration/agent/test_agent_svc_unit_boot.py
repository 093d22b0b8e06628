"""The agent's systemd unit, booted under real systemd (a throwaway systemd-nspawn container on an overlay of
the lab's cached rootfs): the service starts, and inside its sandbox it can still do what the agent needs —
open /dev/net/tun, run wireguard-go and wg, load an nft table, bind port 53, rewrite /etc/resolv.conf,
delete /etc/meshctl/authkey — holding only the three network capabilities."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import meshctl
from meshctl.agent.resolvconf import MANAGED_MARKER
from meshctl.agent.unit import agent_unit_text

from .test_agent_svc_netns import boot, enable_unit, overlay_rootfs

pytestmark = [
    pytest.mark.integration,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount an overlay and boot a container"),
]

# Stands in for `meshctl agent run`: tries each thing the agent does and writes what happened.
PROBE = r'''#!/usr/bin/python3
import os, socket, subprocess, sys, time
report = []
def attempt(name, fn):
    try:
        fn()
        report.append(f"{name}: ok")
    except Exception as err:
        report.append(f"{name}: FAIL {err}")
def run(*argv, stdin=None):
    done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr.strip()[-300:])
attempt("tun", lambda: os.close(os.open("/dev/net/tun", os.O_RDWR)))
attempt("wireguard-go", lambda: run("wireguard-go", "mesh0"))
time.sleep(1)
attempt("wg", lambda: (run("ip", "link", "set", "mesh0", "up"), run("wg", "set", "mesh0", "listen-port", "41641")))
attempt("nft", lambda: run("nft", "-f", "-", stdin="table inet meshctl {}\n"))
attempt("bind53", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).bind(("127.0.0.1", 53)))
attempt("resolv.conf", lambda: open("/etc/resolv.conf", "a").close())
attempt("authkey", lambda: os.unlink("/etc/meshctl/authkey"))
attempt("state", lambda: open("/var/lib/meshctl/agent/probe", "w").close())
attempt("etc-readonly", lambda: open("/etc/hostname", "a").close())
report += [line.strip() for line in open("/proc/self/status") if line.startswith(("CapEff", "CapBnd", "Uid"))]
report.append("argv: " + " ".join(sys.argv[1:]))
report.append("run-mode: " + oct(os.stat("/run/meshctl").st_mode & 0o777))
open("/run/meshctl/report", "w").write("\n".join(report) + "\n")
time.sleep(600)
'''

REPORTER = """[Unit]
After=meshctl-agent.service
[Service]
Type=oneshot
ExecStart=/bin/sh -c 'sleep 4; systemctl show meshctl-agent -p ActiveState -p Result > /out/state; \
cp /run/meshctl/report /out/; journalctl -u meshctl-agent --no-pager > /out/journal 2>&1; systemctl poweroff'
[Install]
WantedBy=multi-user.target
"""


@pytest.fixture
def container() -> Iterator[Path]:
    with overlay_rootfs() as work:
        yield work


def test_the_hardened_unit_lets_the_agent_do_its_job(container: Path) -> None:
    root = container / "merged"
    probe = root / "usr/local/bin/meshctl-probe"
    probe.write_text(PROBE)
    probe.chmod(0o755)
    (root / "etc/meshctl").mkdir(exist_ok=True)
    (root / "etc/meshctl/authkey").write_text("mskey-auth-test\n")
    enable_unit(root, "meshctl-agent.service", agent_unit_text(exec_path="/usr/local/bin/meshctl-probe"))
    enable_unit(root, "svc-report.service", REPORTER)
    boot(container)
    out = container / "out"
    journal = (out / "journal").read_text() if (out / "journal").exists() else "(no journal)"
    assert (out / "state").read_text().split() == ["Result=success", "ActiveState=active"], journal
    report = (out / "report").read_text().splitlines()
    for step in ("tun", "wireguard-go", "wg", "nft", "bind53", "resolv.conf", "authkey", "state"):
        assert f"{step}: ok" in report, (step, report)
    assert any(line.startswith("etc-readonly: FAIL") and "Read-only file system" in line for line in report)
    # CAP_NET_BIND_SERVICE (10), CAP_NET_ADMIN (12), CAP_NET_RAW (13) and nothing else
    assert "CapEff:\t0000000000003400" in report and "CapBnd:\t0000000000003400" in report
    assert "argv: agent run --config /etc/meshctl/agent.toml" in report
    assert "run-mode: 0o700" in report


CRASHING_AGENT = r'''#!/opt/mt/bin/python
import os, signal, time
from pathlib import Path
from meshctl.agent.resolvconf import HostDns

marker = Path("/var/lib/meshctl/agent/crashed-once")
if not marker.exists():  # first start: take over DNS, then die without cleaning up
    HostDns("corp.mesh", resolved=False).apply()
    marker.write_text("1")
    Path("/var/lib/meshctl/agent/while-running").write_text(Path("/etc/resolv.conf").read_text())
    os.kill(os.getpid(), signal.SIGKILL)
Path("/var/lib/meshctl/agent/after-restart").write_text(Path("/etc/resolv.conf").read_text())
time.sleep(600)
'''

CRASH_REPORTER = """[Unit]
After=meshctl-agent.service
[Service]
Type=oneshot
ExecStart=/bin/sh -c 'for i in $(seq 120); do [ -e /var/lib/meshctl/agent/after-restart ] && break; sleep 0.5; done; \
cp /var/lib/meshctl/agent/while-running /var/lib/meshctl/agent/after-restart /out/; \
systemctl show meshctl-agent -p NRestarts > /out/restarts; systemctl poweroff'
[Install]
WantedBy=multi-user.target
"""


def test_a_crashed_agents_resolv_conf_is_restored_before_the_restart(container: Path) -> None:
    """The unit's ExecStopPost puts the host's resolv.conf back after a SIGKILL; Restart= brings the agent back."""
    root = container / "merged"
    repo = Path(meshctl.__file__).resolve().parents[2]
    site = next(Path(sys.prefix).glob("lib/python3*/site-packages"))
    bindir = root / "opt/mt/bin"
    bindir.mkdir(parents=True)
    # The container's own python3 with this checkout and the venv's dependencies, bound at fixed paths under
    # /opt: the checkout may sit under /tmp (hidden by the unit's PrivateTmp) and the venv under /root
    # (hidden by ProtectHome).
    (bindir / "python").write_text('#!/bin/sh\nPYTHONPATH=/opt/mt/toolkit:/opt/mt/site exec /usr/bin/python3 "$@"\n')
    (bindir / "meshctl").write_text(CRASHING_AGENT)
    for exe in ("python", "meshctl"):
        (bindir / exe).chmod(0o755)
    original = "# the container's own\nnameserver 192.0.2.1\n"
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/resolv.conf").write_text(original)
    enable_unit(root, "meshctl-agent.service", agent_unit_text(exec_path="/opt/mt/bin/meshctl"))
    enable_unit(root, "svc-report.service", CRASH_REPORTER)
    boot(container, f"--bind-ro={repo / 'toolkit'}:/opt/mt/toolkit", f"--bind-ro={site}:/opt/mt/site")

    out = container / "out"
    # at least one restart by Restart=; under load a slow first start may be restarted once more
    restarts = (out / "restarts").read_text().strip()
    assert restarts.startswith("NRestarts=") and int(restarts.split("=")[1]) >= 1, restarts
    assert (out / "while-running").read_text().startswith(MANAGED_MARKER)
    assert (out / "after-restart").read_text() == original
