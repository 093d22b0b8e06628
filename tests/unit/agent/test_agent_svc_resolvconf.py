"""Host DNS configuration in a temp root: managed resolv.conf, backup, restore, crash recovery, resolved mode."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from meshctl.agent.resolvconf import (
    BACKUP,
    MANAGED_MARKER,
    HostDns,
    HostDnsError,
    parse_resolv_conf,
    resolved_apply_commands,
    uses_resolved,
)
from meshctl.agent.resolvconf import (
    main as resolvconf_main,
)

ORIGINAL = "# from DHCP\nnameserver 192.0.2.53\nnameserver 2001:db8::53\nsearch lan example.org\noptions edns0\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "resolv.conf").write_text(ORIGINAL)
    os.chmod(tmp_path / "etc" / "resolv.conf", 0o644)
    return tmp_path


def host_dns(root: Path) -> HostDns:
    return HostDns("corp.mesh", "mesh0", root=root, resolved=False)


def test_apply_points_the_host_at_magicdns_and_keeps_search_and_options(root: Path) -> None:
    assert host_dns(root).apply() is True
    text = (root / "etc/resolv.conf").read_text()
    assert text.startswith(MANAGED_MARKER)
    servers, search, options = parse_resolv_conf(text)
    assert servers == ["100.100.100.100"]
    assert search == ["corp.mesh", "lan", "example.org"]
    assert options == ["options edns0"]
    backup = root / BACKUP
    assert oct(backup.stat().st_mode & 0o777) == "0o600"
    assert json.loads(backup.read_text())["content"] == ORIGINAL


def test_upstreams_are_the_previous_resolvers_before_and_after_apply(root: Path) -> None:
    dns = host_dns(root)
    assert dns.upstreams() == [("192.0.2.53", 53), ("2001:db8::53", 53)]
    dns.apply()
    assert dns.upstreams() == [("192.0.2.53", 53), ("2001:db8::53", 53)]


def test_apply_is_idempotent_and_restore_puts_the_original_back(root: Path) -> None:
    dns = host_dns(root)
    dns.apply()
    managed = (root / "etc/resolv.conf").read_text()
    assert dns.apply() is False
    assert (root / "etc/resolv.conf").read_text() == managed
    assert dns.restore() is True
    assert (root / "etc/resolv.conf").read_text() == ORIGINAL
    assert not (root / BACKUP).exists()
    assert dns.restore() is False


def test_a_crash_leaves_a_backup_that_the_next_start_keeps_and_restores(root: Path) -> None:
    host_dns(root).apply()  # then the agent is killed: nothing restored
    fresh = host_dns(root)  # next start
    fresh.apply()
    assert json.loads((root / BACKUP).read_text())["content"] == ORIGINAL  # not our managed file
    assert fresh.upstreams() == [("192.0.2.53", 53), ("2001:db8::53", 53)]
    host_dns(root).recover()
    assert (root / "etc/resolv.conf").read_text() == ORIGINAL


def test_a_file_replaced_by_someone_else_is_left_alone_on_restore(root: Path) -> None:
    dns = host_dns(root)
    dns.apply()
    (root / "etc/resolv.conf").write_text("nameserver 198.51.100.1\n")  # a DHCP renewal
    dns.restore()
    assert (root / "etc/resolv.conf").read_text() == "nameserver 198.51.100.1\n"
    assert not (root / BACKUP).exists()


def test_symlinked_resolv_conf_is_replaced_then_relinked(root: Path) -> None:
    (root / "run").mkdir()
    (root / "run" / "upstream.conf").write_text("nameserver 203.0.113.9\n")
    (root / "etc/resolv.conf").unlink()
    os.symlink("../run/upstream.conf", root / "etc/resolv.conf")
    dns = host_dns(root)
    dns.apply()
    assert not (root / "etc/resolv.conf").is_symlink()
    assert (root / "run/upstream.conf").read_text() == "nameserver 203.0.113.9\n"  # target untouched
    dns.restore()
    assert os.readlink(root / "etc/resolv.conf") == "../run/upstream.conf"


def test_missing_resolv_conf_is_created_then_removed(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    dns = host_dns(tmp_path)
    dns.apply()
    assert parse_resolv_conf((tmp_path / "etc/resolv.conf").read_text())[0] == ["100.100.100.100"]
    assert dns.upstreams() == []
    dns.restore()
    assert not (tmp_path / "etc/resolv.conf").exists()


def test_corrupt_backup_is_an_error_not_a_silent_overwrite(root: Path) -> None:
    (root / BACKUP).parent.mkdir(parents=True)
    (root / BACKUP).write_text("{not json")
    with pytest.raises(HostDnsError, match="unreadable"):
        host_dns(root).apply()
    assert (root / "etc/resolv.conf").read_text() == ORIGINAL


def test_resolved_mode_uses_per_link_dns_and_routing_domain(root: Path) -> None:
    ran: list[list[str]] = []

    def runner(argv: Sequence[str]) -> None:
        ran.append(list(argv))

    (root / "run/systemd/resolve").mkdir(parents=True)
    (root / "run/systemd/resolve/resolv.conf").write_text("nameserver 192.0.2.1\nnameserver 127.0.0.53\n")
    dns = HostDns("corp.mesh.", "mesh0", root=root, resolved=True, runner=runner)
    dns.apply()
    assert ran == resolved_apply_commands("mesh0", "corp.mesh") == [
        ["ip", "addr", "replace", "100.100.100.100/32", "dev", "mesh0"],
        ["resolvectl", "dns", "mesh0", "100.100.100.100"],
        ["resolvectl", "domain", "mesh0", "~corp.mesh"],
        ["resolvectl", "default-route", "mesh0", "false"],
        ["resolvectl", "llmnr", "mesh0", "no"],
        ["resolvectl", "mdns", "mesh0", "no"],
        ["resolvectl", "dnssec", "mesh0", "no"],
    ]
    assert (root / "etc/resolv.conf").read_text() == ORIGINAL  # nothing on disk changes
    assert dns.upstreams()[0] == ("192.0.2.1", 53)
    del ran[:]
    dns.restore()
    assert ran == [["resolvectl", "revert", "mesh0"], ["ip", "addr", "del", "100.100.100.100/32", "dev", "mesh0"]]


def test_resolved_revert_tries_every_step_and_reports_failures(root: Path) -> None:
    ran: list[list[str]] = []

    def runner(argv: Sequence[str]) -> None:
        ran.append(list(argv))
        if argv[0] == "resolvectl":
            raise HostDnsError("resolvectl revert mesh0 failed: Link mesh0 not known")

    with pytest.raises(HostDnsError, match="Link mesh0 not known"):
        HostDns("corp.mesh", "mesh0", root=root, resolved=True, runner=runner).restore()
    assert [argv[0] for argv in ran] == ["resolvectl", "ip"]


def test_backup_can_live_in_the_agents_own_state_dir(root: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    dns = HostDns("corp.mesh", root=root, resolved=False, backup_path=state / "resolv.conf.backup.json")
    dns.apply()
    assert json.loads((state / "resolv.conf.backup.json").read_text())["content"] == ORIGINAL
    assert not (root / BACKUP).exists()
    dns.restore()
    assert (root / "etc/resolv.conf").read_text() == ORIGINAL


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("stub-symlink", True),
        ("stub-file", True),
        ("uplink-symlink", False),
        ("own-file", False),
    ],
)
def test_resolved_counts_only_when_the_host_resolver_goes_through_it(root: Path, setup: str, expected: bool) -> None:
    conf = root / "etc/resolv.conf"
    conf.unlink()
    if setup == "stub-symlink":
        (root / "run/systemd/resolve").mkdir(parents=True)
        (root / "run/systemd/resolve/stub-resolv.conf").write_text("nameserver 127.0.0.53\n")
        os.symlink("../run/systemd/resolve/stub-resolv.conf", conf)
    elif setup == "uplink-symlink":  # resolved's list of upstream servers: libc bypasses resolved
        (root / "run/systemd/resolve").mkdir(parents=True)
        (root / "run/systemd/resolve/resolv.conf").write_text("nameserver 192.0.2.1\n")
        os.symlink("../run/systemd/resolve/resolv.conf", conf)
    elif setup == "stub-file":
        conf.write_text("nameserver 127.0.0.53\noptions edns0 trust-ad\n")
    else:
        conf.write_text(ORIGINAL)  # resolved may run, but libc never asks it
    assert uses_resolved(conf) is expected


def test_the_stop_post_command_restores_what_a_crash_left(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host_dns(root).apply()  # then the agent is killed
    assert resolvconf_main(["restore", "--root", str(root)]) == 0
    assert (root / "etc/resolv.conf").read_text() == ORIGINAL
    assert resolvconf_main(["restore", "--root", str(root)]) == 0  # after a clean stop: nothing to do
    assert capsys.readouterr().out.splitlines() == ["restored the host's resolv.conf", "nothing to restore"]


def test_the_stop_post_command_finds_the_backup_in_the_configured_state_dir(root: Path, tmp_path: Path) -> None:
    state = tmp_path / "agent-state"
    HostDns("corp.mesh", root=root, resolved=False, backup_path=state / "resolv.conf.backup.json").apply()
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{state}"\ncontrol_url = "http://control:8080"\n')
    assert resolvconf_main(["restore", "--config", str(config), "--root", str(root)]) == 0
    assert (root / "etc/resolv.conf").read_text() == ORIGINAL
    assert not (state / "resolv.conf.backup.json").exists()
