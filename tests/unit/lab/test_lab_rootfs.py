"""Rootfs cache keys, reuse of a complete cached tree, NAT router rules and PID ownership checks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from meshctl.lab.host import pid_is_ours, pid_start_time
from meshctl.lab.network import router_rules
from meshctl.lab.plan import Nat, plan_lab
from meshctl.lab.rootfs import PACKAGES, cached_rootfs, ensure_rootfs, rootfs_key


def test_key_depends_on_the_package_set_only() -> None:
    assert rootfs_key(PACKAGES) == rootfs_key(tuple(reversed(PACKAGES)))
    assert rootfs_key(PACKAGES) != rootfs_key((*PACKAGES, "htop"))
    assert rootfs_key(PACKAGES, "bookworm") != rootfs_key(PACKAGES, "trixie")


def test_required_packages_are_in_the_list() -> None:
    need = {"systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "python3-venv", "python3-pip", "iproute2",
            "iptables", "nftables", "wireguard-tools", "wireguard-go", "iperf3", "ca-certificates", "curl",
            "iputils-ping", "procps", "netcat-openbsd", "dnsutils", "less"}
    assert need <= set(PACKAGES)


def test_complete_cached_tree_is_reused_without_building(tmp_path: Path) -> None:
    tree = tmp_path / f"rootfs-{rootfs_key()}"
    tree.mkdir()
    assert cached_rootfs(tmp_path) is None  # no completion marker: a half tree is never used
    (tree / ".meshctl-rootfs").write_text("key=...\n")
    got = ensure_rootfs(cache_dir=tmp_path, mirror="http://unused.invalid/debian")
    assert (got.path, got.built) == (tree, False)


def test_hard_nat_randomises_ports_easy_nat_does_not_and_only_ssh_is_mapped_in() -> None:
    plan = plan_lab("t", "10.240.0", nodes=2, nat={"node1": Nat.EASY, "node2": Nat.HARD})
    easy, hard = router_rules(plan.host("node1"), plan.root_address), router_rules(plan.host("node2"), "10.240.0.254")
    assert "-A POSTROUTING -o wan -j MASQUERADE\n" in easy
    assert "-A POSTROUTING -o wan -j MASQUERADE --random-fully\n" in hard
    assert ":FORWARD DROP" in hard
    assert "-s 10.240.0.254 -p tcp --dport 22 -j DNAT --to-destination 192.168.2.2:22" in hard
    assert [line for line in hard.splitlines() if "-i wan -o lan" in line] == [
        "-A FORWARD -i wan -o lan -s 10.240.0.254 -p tcp -d 192.168.2.2 --dport 22 -m conntrack --ctstate DNAT -j ACCEPT"
    ]


def test_a_recorded_pid_is_ours_only_with_its_start_time_and_directory() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "--directory=/lab/x/root"])
    try:
        # Popen returns once exec has begun; the new cmdline appears a moment later
        deadline = time.monotonic() + 5
        while b"--directory" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)
        start = pid_start_time(proc.pid)
        assert start is not None
        assert pid_is_ours(proc.pid, start, "/lab/x/root")
        assert not pid_is_ours(proc.pid, start + 1, "/lab/x/root")  # the PID was reused by another process
        assert not pid_is_ours(proc.pid, start, "/lab/y/root")  # a process of another lab
        assert not pid_is_ours(os.getpid(), pid_start_time(os.getpid()) or 0, "/lab/x/root")
    finally:
        proc.kill()
        proc.wait()
    assert pid_start_time(proc.pid) is None


def test_a_new_build_removes_older_trees_no_lab_boots_from(tmp_path: Path) -> None:
    from meshctl.lab.rootfs import _remove_unused_trees

    old, new = tmp_path / "rootfs-old", tmp_path / "rootfs-new"
    for tree in (old, new):
        (tree / "etc").mkdir(parents=True)
    _remove_unused_trees(tmp_path, keep=new)
    assert not old.exists() and (new / "etc").is_dir()


def test_launcher_enters_every_group_then_execs_the_command_under_the_same_pid(tmp_path: Path) -> None:
    from meshctl.lab.cgroup import launcher_argv

    groups = [tmp_path / "a", tmp_path / "b"]
    for group in groups:
        group.mkdir()
        (group / "cgroup.procs").write_text("")
    proc = subprocess.run(launcher_argv([str(g) for g in groups], ["sh", "-c", "echo $$; echo done -- x"]),
                          capture_output=True, text=True, check=True)  # fmt: skip
    pid, rest = proc.stdout.split("\n", 1)
    assert rest == "done -- x\n"
    assert [(g / "cgroup.procs").read_text().strip() for g in groups] == [pid, pid]
    # a group it cannot enter stops the launch: nothing runs outside its cgroups
    failing = subprocess.run(launcher_argv([str(tmp_path / "missing")], ["echo", "ran"]), capture_output=True,
                             text=True, check=False)  # fmt: skip
    assert (failing.returncode, failing.stdout) == (125, "")
