"""One lab host: an overlay over the cached rootfs, its identity, and systemd booted under systemd-nspawn.

`prepare_host` mounts the overlay and writes the host's identity into it (hostname, machine-id, SSH host key,
the lab's authorized key); `boot_host` starts systemd-nspawn detached and returns its PID and start time;
`host_processes` / `stop_processes` find and end exactly the processes inside the lab's namespaces.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..workspace import generate_ssh_keypair
from .cgroup import create_host_cgroups, launcher_argv
from .errors import LabHostError
from .plan import HostPlan
from .runner import run, run_ok

__all__ = [
    "BootedHost",
    "PreparedHost",
    "boot_host",
    "lab_mounts",
    "pid_is_ours",
    "pid_start_time",
    "prepare_host",
    "processes_in_netns",
    "unmount_all",
    "wait_for_ssh",
]


@dataclass(frozen=True)
class PreparedHost:
    plan: HostPlan
    root_dir: Path  # the merged overlay
    machine_id: str
    host_key_line: str  # "ssh-ed25519 AAAA… root@name"


@dataclass(frozen=True)
class BootedHost:
    prepared: PreparedHost
    pid: int
    pid_start: int
    cgroups: tuple[str, ...]


def _copy_mode(src: Path, dst: Path) -> None:
    # an overlay's upper root decides the merged root's mode/owner: make it the lower root's
    st = src.stat()
    os.chown(dst, st.st_uid, st.st_gid)
    os.chmod(dst, st.st_mode & 0o7777)


def prepare_host(host: HostPlan, host_dir: Path, rootfs: Path, authorized_key: str, etc_hosts: str) -> PreparedHost:
    """Mount the host's overlay and give it its own identity. The upper dir only ever receives copy-ups."""
    upper, work, merged = host_dir / "upper", host_dir / "work", host_dir / "root"
    for path in (upper, work, merged):
        path.mkdir(parents=True, exist_ok=True)
    _copy_mode(rootfs, upper)
    _copy_mode(rootfs, merged)
    run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={rootfs},upperdir={upper},workdir={work}", str(merged)])
    machine_id = uuid.uuid4().hex
    (merged / "etc/machine-id").write_text(machine_id + "\n")
    (merged / "etc/hostname").write_text(host.name + "\n")
    (merged / "etc/hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{host.name}\n{etc_hosts}")
    key_path = merged / "etc/ssh/ssh_host_ed25519_key"
    host_key_line = generate_ssh_keypair(key_path, f"root@{host.name}")
    (merged / "etc/ssh/sshd_config.d/meshctl-lab-hostkey.conf").write_text(f"HostKey /{key_path.relative_to(merged)}\n")
    ssh_dir = merged / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    os.chmod(ssh_dir, 0o700)
    keys = ssh_dir / "authorized_keys"
    keys.write_text(authorized_key.strip() + "\n")
    os.chmod(keys, 0o600)
    return PreparedHost(host, merged, machine_id, host_key_line.strip())


def boot_host(prepared: PreparedHost, lab: str, console_log: Path) -> BootedHost:
    """Start systemd under systemd-nspawn in the host's namespace and own cgroups, detached from this process."""
    argv = [
        "systemd-nspawn", "--quiet", "--boot", "--register=no", "--keep-unit",
        f"--directory={prepared.root_dir}", f"--machine=mlab-{lab}-{prepared.plan.name}",
        f"--hostname={prepared.plan.name}", f"--uuid={prepared.machine_id}",
        f"--network-namespace-path=/run/netns/{prepared.plan.netns}",
        "--capability=CAP_NET_ADMIN,CAP_NET_RAW", "--bind=/dev/net/tun",
        "--link-journal=no", "--resolv-conf=off", "--timezone=off", "--console=read-only",
        # arguments for the container's systemd: boot status lines go to console.log (kept if a boot fails)
        "systemd.show_status=yes",
    ]  # fmt: skip
    cgroups = create_host_cgroups(lab, prepared.plan.name)
    with console_log.open("wb") as out:
        proc = subprocess.Popen(launcher_argv(cgroups, argv), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True)  # fmt: skip
    start = pid_start_time(proc.pid)
    # exec has begun when Popen returns, but the new command line shows up a moment later: wait for it, so the
    # PID we record is verifiable at once
    deadline = time.monotonic() + 2.0
    while start is not None and not pid_is_ours(proc.pid, start, str(prepared.root_dir)):
        if time.monotonic() > deadline:
            break
        time.sleep(0.005)
        start = pid_start_time(proc.pid)
    if start is None:
        raise LabHostError(f"{prepared.plan.name}: systemd-nspawn exited at once (see {console_log})",
                           host=prepared.plan.name)  # fmt: skip
    return BootedHost(prepared, proc.pid, start, tuple(cgroups))


def pid_start_time(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot, or None when there is no such (live) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # the command name may hold spaces and parens: fields start after the last ')'
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        # a zombie has exited; if it is our child (a lab brought up by this process), reap it
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return None
    return int(fields[19])


def pid_is_ours(pid: int, pid_start: int, root_dir: str) -> bool:
    """True only when `pid` is still the systemd-nspawn we started for `root_dir` (PIDs wrap)."""
    if pid <= 1 or pid_start_time(pid) != pid_start:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return False
    return f"--directory={root_dir}".encode() in cmdline


def processes_in_netns(inode: tuple[int, int]) -> list[int]:
    """PIDs of every process inside the network namespace identified by (device, inode)."""
    pids: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry.name}/ns/net")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if (st.st_dev, st.st_ino) == inode:
            pids.append(int(entry.name))
    return pids


def signal_pids(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def wait_gone(pids: Iterable[tuple[int, int]], timeout: float) -> list[int]:
    """Wait until none of the (pid, start) pairs is alive; return those still alive at the deadline."""
    pending = list(pids)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        pending = [(p, s) for p, s in pending if pid_start_time(p) == s]
        if pending:
            time.sleep(0.05)
    return [p for p, s in pending if pid_start_time(p) == s]


def wait_for_ssh(host: str, port: int, deadline: float) -> None:
    """Block until an SSH server banner arrives from host:port, or raise LabHostError at the deadline."""
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1.0) as sock:
                sock.settimeout(2.0)
                if sock.recv(4).startswith(b"SSH-"):
                    return
                last = "no SSH banner"
        except OSError as err:
            last = str(err)
        time.sleep(0.1)
    raise LabHostError(f"no SSH server at {host}:{port} ({last})", host=host)


def lab_mounts(lab_dir: Path) -> list[str]:
    """Mount points at or below `lab_dir` in this mount namespace, deepest first."""
    prefix = str(lab_dir).rstrip("/") + "/"
    points: list[str] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point.startswith(prefix):
            points.append(point)
    return sorted(points, key=lambda p: p.count("/"), reverse=True)


def unmount_all(lab_dir: Path) -> list[str]:
    """Unmount everything under `lab_dir`; returns the mount points that were unmounted."""
    done: list[str] = []
    for point in lab_mounts(lab_dir):
        if run_ok(["umount", point]) or run_ok(["umount", "-l", point]):
            done.append(point)
    return done
