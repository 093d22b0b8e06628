"""The on-host rotation job: the policy file the ssh role writes is the one the job reads; node-key decisions."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from roles.ssh.deploy import render_policy, render_units

from meshctl.agent.config import AgentConfig
from meshctl.agent.localclient import AgentNotRunningError
from meshctl.agent.sshcert import SshPaths
from meshctl.errors import ConfigError
from meshctl.keys import ControlPrivateKey
from meshctl.rotate.hostjob import load_host_policy, run_host_jobs
from meshctl.workspace import RotationPolicy

DAY = 86400
NOW = 1_800_000_000.0


def test_role_policy_file_round_trips(tmp_path: Path) -> None:
    policy = RotationPolicy(node_key_max_age=90 * DAY, host_cert_validity=7 * DAY, host_cert_renew_before=2 * DAY,
                            deploy_key_max_age=90 * DAY)
    f = tmp_path / "rotation.toml"
    f.write_text(render_policy(policy))
    loaded, validity = load_host_policy(f)
    assert loaded == policy and validity == 7 * DAY


def test_missing_policy_file_means_defaults(tmp_path: Path) -> None:
    assert load_host_policy(tmp_path / "absent.toml") == (RotationPolicy(), None)


def test_bad_policy_file_is_one_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "rotation.toml"
    f.write_text("[rotation]\nnode_key_max_age = '3 weeks'\n")
    with pytest.raises(ConfigError, match="node_key_max_age"):
        load_host_policy(f)
    f.write_text("[rotation]\nnode_key_maxage = '3d'\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_host_policy(f)


def test_timer_runs_the_if_due_job() -> None:
    service, timer = render_units({"meshctl_prefix": "/opt/meshctl", "rotate_first_run": "1min",
                                   "rotate_on_calendar": "hourly", "rotate_randomized_delay": "5min"})
    assert "ExecStart=/opt/meshctl/bin/meshctl agent rotate --if-due " in service
    assert "Type=oneshot" in service and "ReadWritePaths=/etc/ssh /run/meshctl" in service
    assert "OnCalendar=hourly" in timer and "OnActiveSec=1min" in timer and "WantedBy=timers.target" in timer


def _cfg(tmp: Path, node_key_age: float) -> AgentConfig:
    state = tmp / "agent"
    state.mkdir()
    (state / "node.key").write_text("x")
    os.utime(state / "node.key", (NOW - node_key_age, NOW - node_key_age))
    return AgentConfig(control_url="http://127.0.0.1:9", control_key=ControlPrivateKey.generate().public_key(),
                       state_dir=state, socket=tmp / "agent.sock")


def _run(cfg: AgentConfig, tmp: Path, **kw: Any) -> list[Any]:
    rotated: list[Path] = []

    def rotate(sock: Path) -> dict[str, Any]:
        rotated.append(sock)
        return {"oldNodeKey": "[old]", "newNodeKey": "[new]"}

    paths = SshPaths(ssh_dir=tmp / "nossh", dropin=tmp / "d.conf", user_ca=tmp / "ca.pub")
    lines = asyncio.run(run_host_jobs(cfg, RotationPolicy(), NOW, paths=paths, rotate=rotate, **kw))
    return [rotated, *lines]


def test_young_node_key_is_left_alone(tmp_path: Path) -> None:
    rotated, node, cert = _run(_cfg(tmp_path, 10 * DAY), tmp_path, status=lambda s: {"self": {"keyExpiry": None}})
    assert rotated == [] and node.action == "not-due" and "10d old" in node.reason
    # no host keys in the (empty) ssh dir: the cert job fails on its own, the node-key job is unaffected
    assert cert.what == "host-cert" and cert.action == "failed" and "no SSH host keys" in cert.reason


def test_old_node_key_is_rotated_with_its_reason(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, 175 * DAY)
    rotated, node, _ = _run(cfg, tmp_path, status=lambda s: {"self": {"keyExpiry": None}})
    assert rotated == [cfg.socket]
    assert node.action == "rotated" and "175d old" in node.reason and "[old] -> [new]" in node.reason


def test_control_expiry_makes_a_young_key_due(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, 10 * DAY)
    rotated, node, _ = _run(cfg, tmp_path, status=lambda s: {"self": {"keyExpiry": NOW + 3 * DAY}})
    assert rotated and node.action == "rotated" and "key expiry" in node.reason


def test_stopped_agent_is_reported_not_raised(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, 175 * DAY)

    def status(sock: Path) -> dict[str, Any]:
        raise AgentNotRunningError(sock, "connection refused")

    def rotate(sock: Path) -> dict[str, Any]:
        raise AgentNotRunningError(sock, "connection refused")

    paths = SshPaths(ssh_dir=tmp_path / "nossh", dropin=tmp_path / "d.conf", user_ca=tmp_path / "ca.pub")
    node, _ = asyncio.run(run_host_jobs(cfg, RotationPolicy(), NOW, paths=paths, status=status, rotate=rotate))
    assert node.action == "failed" and "rotation failed" in node.reason


def test_host_cert_keeper_paces_retries_and_never_raises(tmp_path: Path) -> None:
    import subprocess

    from meshctl.agent.sshcert import HostCertKeeper, HostCertOutcome, SshCertAgentError
    from meshctl.keys.sshca import Due

    ssh = tmp_path / "ssh"
    ssh.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / "ssh_host_ed25519_key")],
                   check=True)
    paths = SshPaths(ssh_dir=ssh, dropin=tmp_path / "d.conf", user_ca=tmp_path / "ca.pub")
    now = [0.0]
    calls: list[float] = []
    fail = [True]

    async def ensure(cfg: AgentConfig, renew_before: int, *, paths: SshPaths) -> HostCertOutcome:
        calls.append(now[0])
        if fail[0]:
            raise SshCertAgentError("cannot reach control server")
        return HostCertOutcome(Due("host-cert", True, 0.0, "no host certificate installed"), True, True, 123)

    keeper = HostCertKeeper(_cfg(tmp_path, 0), paths=paths, clock=lambda: now[0], ensure=ensure)
    assert asyncio.run(keeper.tick()) is None  # failure: logged, retried after a minute
    now[0] = 30
    asyncio.run(keeper.tick())
    assert calls == [0.0]
    now[0], fail[0] = 61, False
    out = asyncio.run(keeper.tick())
    assert out is not None and out.renewed and calls == [0.0, 61]
    now[0] = 61 + 599
    asyncio.run(keeper.tick())
    assert calls == [0.0, 61]  # next check only after the 10 min interval
    now[0] = 61 + 600
    asyncio.run(keeper.tick())
    assert calls == [0.0, 61, 661]


def test_host_cert_keeper_without_sshd_disables_itself(tmp_path: Path) -> None:
    from meshctl.agent.sshcert import HostCertKeeper

    paths = SshPaths(ssh_dir=tmp_path / "none", dropin=tmp_path / "d.conf", user_ca=tmp_path / "ca.pub")
    keeper = HostCertKeeper(_cfg(tmp_path, 0), paths=paths)
    assert asyncio.run(keeper.tick()) is None and keeper.disabled
