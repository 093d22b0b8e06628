"""Verification results: JSON summary, JUnit XML for CI systems, the per-run ssh_config."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from meshctl.verify import CheckResult, HostSpec, MatrixCell, Outcome, Report, SshSession, planned_checks


def sample() -> Report:
    return Report(
        results=[
            CheckResult("control", "control healthz", Outcome.PASS, "ok", 0.1),
            CheckResult("node2", "agent service", Outcome.FAIL, "meshctl-agent is inactive, want active", 0.2),
            CheckResult("node1", "key expiry", Outcome.WARN, "node key expires in 3d, want > 14d", 0.1),
        ],
        matrix=[
            MatrixCell("node1", "node3", True, 1.5, "relay(900)"),
            MatrixCell("node3", "node1", False, None, "relay(900)", "node3 -> node1 100% loss"),
        ],
        seconds=3.2,
    )


def test_json_counts_failures_from_checks_and_matrix() -> None:
    data = sample().to_json()
    assert data["ok"] is False
    assert data["failed"] == 2 and data["warnings"] == 1
    assert {c["outcome"] for c in data["checks"]} == {"pass", "fail", "warn"}
    assert data["matrix"][0] == {"src": "node1", "dst": "node3", "reachable": True, "rtt_ms": 1.5,
                                 "path": "relay(900)", "message": ""}


def test_ok_only_when_nothing_failed() -> None:
    r = Report(results=[CheckResult("a", "x", Outcome.WARN, "soon")],
               matrix=[MatrixCell("a", "b", True, 0.3, "direct")])
    assert r.ok
    r.matrix.append(MatrixCell("b", "a", False, None, "unknown", "no reply"))
    assert not r.ok


def test_junit_has_a_suite_per_host_and_the_mesh() -> None:
    root = ET.fromstring(sample().to_junit())
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"control", "node2", "node1", "mesh"}
    assert suites["node2"].get("failures") == "1"
    failure = suites["node2"].find("testcase/failure")
    assert failure is not None and "want active" in (failure.get("message") or "")
    assert suites["mesh"].get("failures") == "1" and suites["mesh"].get("tests") == "2"


def test_ssh_config_uses_the_deploy_connection_settings(tmp_path: Path) -> None:
    spec = HostSpec("node1", ("node",), {"ssh_hostname": "10.1.2.3", "ssh_port": 2222, "ssh_user": "root",
                                         "ssh_key": "/k/lab_ed25519", "ssh_known_hosts_file": "/k/known_hosts",
                                         "ssh_strict_host_key_checking": "yes"})
    with SshSession([spec]) as s:
        text = s.config.read_text()
        cfg_dir = s.config.parent
        assert "Host node1\n" in text
        for line in ("HostName 10.1.2.3", "Port 2222", "User root", "IdentityFile /k/lab_ed25519",
                     "IdentitiesOnly yes", "UserKnownHostsFile /k/known_hosts", "StrictHostKeyChecking yes",
                     "BatchMode yes"):
            assert f"  {line}\n" in text
        assert s.ssh_argv("node1") == ["ssh", "-F", str(s.config), "node1"]
    assert not cfg_dir.exists()  # the private config dir (and control sockets) are removed


def test_planned_checks_cover_every_role_once() -> None:
    both = HostSpec("h", ("control", "node"))
    names = [n for _, n in planned_checks(both)]
    assert names.count("version") == 1
    assert "control healthz" in names and "agent service" in names
