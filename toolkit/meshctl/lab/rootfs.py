"""The lab's Debian 12 root filesystem: built once with debootstrap, cached, shared read-only by every host.

The cache lives under `/var/cache/meshctl/lab/rootfs-<key>` where `key` hashes the package list and the
recipe version, so the rootfs is rebuilt only when either changes. A build goes to a temporary directory
that is renamed into place when complete, so a crashed build never leaves a half rootfs in the cache;
a lock file serialises concurrent builds (two `make test` runs on one machine share one build).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import LabCommandError, RootfsBuildError
from .mirror import find_apt_mirror
from .runner import run

__all__ = ["PACKAGES", "SUITE", "Rootfs", "ensure_rootfs", "rootfs_key"]

SUITE = "bookworm"
CACHE_DIR = Path("/var/cache/meshctl/lab")

#: bump when the customisation below changes, so cached trees built by an older recipe are rebuilt
RECIPE_VERSION = 3

PACKAGES: tuple[str, ...] = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "python3-venv", "python3-pip",
    "iproute2", "iptables", "nftables", "wireguard-tools", "wireguard-go", "iperf3", "ca-certificates",
    "curl", "iputils-ping", "procps", "netcat-openbsd", "dnsutils", "less", "socat",
)  # fmt: skip

#: units that make no sense in a container or slow its boot; masked in the rootfs
MASKED_UNITS: tuple[str, ...] = (
    "getty@tty1.service", "console-getty.service", "container-getty@.service", "serial-getty@.service",
    "getty-static.service", "systemd-networkd-wait-online.service", "apt-daily.timer",
    "apt-daily-upgrade.timer", "e2scrub_all.timer", "e2scrub_reap.service", "fstrim.timer", "man-db.timer",
    "dpkg-db-backup.timer", "systemd-timesyncd.service", "systemd-journald-audit.socket",
    "systemd-hwdb-update.service", "systemd-udevd.service", "systemd-udev-trigger.service",
    "sys-kernel-debug.mount", "sys-kernel-tracing.mount", "sys-kernel-config.mount",
    # no passwords are ever asked in a lab host; these watch directories with inotify (a per-user limit)
    "systemd-ask-password-console.path", "systemd-ask-password-wall.path",
)  # fmt: skip

SSHD_CONFIG = """\
# meshctl lab: root logs in by key only; no DNS lookups on connect (the lab has no resolver)
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
"""


@dataclass(frozen=True)
class Rootfs:
    """A complete cached rootfs."""

    path: Path
    key: str
    built: bool  # true when this call built it, false when it was reused
    seconds: float


def rootfs_key(packages: tuple[str, ...] = PACKAGES, suite: str = SUITE) -> str:
    """Cache key: hash of the sorted package list, the suite and the recipe version."""
    text = "\n".join([suite, f"recipe={RECIPE_VERSION}", *sorted(set(packages))])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_rootfs(cache_dir: Path = CACHE_DIR, packages: tuple[str, ...] = PACKAGES) -> Path | None:
    """The cached rootfs for this package list, if complete."""
    path = cache_dir / f"rootfs-{rootfs_key(packages)}"
    return path if (path / ".meshctl-rootfs").is_file() else None


def ensure_rootfs(
    *, cache_dir: Path = CACHE_DIR, packages: tuple[str, ...] = PACKAGES, mirror: str | None = None,
    log: Path | None = None,
) -> Rootfs:  # fmt: skip
    """Return the cached rootfs, building it first if the package list has no complete tree yet."""
    start = time.monotonic()
    existing = cached_rootfs(cache_dir, packages)
    if existing is not None:
        return Rootfs(existing, rootfs_key(packages), built=False, seconds=time.monotonic() - start)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same tree: wait for it
        existing = cached_rootfs(cache_dir, packages)
        if existing is not None:
            return Rootfs(existing, rootfs_key(packages), built=False, seconds=time.monotonic() - start)
        _remove_stale_builds(cache_dir)
        path = _build(cache_dir, packages, mirror or find_apt_mirror(), log or cache_dir / "build.log")
        _remove_unused_trees(cache_dir, keep=path)
    return Rootfs(path, rootfs_key(packages), built=True, seconds=time.monotonic() - start)


def _remove_stale_builds(cache_dir: Path) -> None:
    # we hold the lock, so any temporary tree left here belongs to a build that crashed
    for leftover in cache_dir.glob(".build-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _remove_unused_trees(cache_dir: Path, keep: Path) -> None:
    # trees of older package lists or recipes, unless a running lab still boots from one (an overlay's lowerdir)
    in_use = Path("/proc/self/mountinfo").read_text()
    for tree in cache_dir.glob("rootfs-*"):
        if tree != keep and f"lowerdir={tree}," not in in_use and f"lowerdir={tree}\n" not in in_use:
            shutil.rmtree(tree, ignore_errors=True)


def _build(cache_dir: Path, packages: tuple[str, ...], mirror: str, log: Path) -> Path:
    key = rootfs_key(packages)
    final = cache_dir / f"rootfs-{key}"
    tmp = cache_dir / f".build-{key}-{os.getpid()}"
    argv = [
        "debootstrap", "--variant=minbase", "--components=main", f"--include={','.join(sorted(set(packages)))}",
        SUITE, str(tmp), mirror,
    ]  # fmt: skip
    try:
        with log.open("w") as out:
            out.write(f"$ {' '.join(argv)}\n")
            out.flush()
            proc = subprocess.run(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False, timeout=1800,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )  # fmt: skip
        if proc.returncode != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise RootfsBuildError(
                f"debootstrap {SUITE} from {mirror} exited {proc.returncode}: {tail[0]}", hint=f"full log: {log}"
            )
        _customise(tmp, mirror, packages)
        if final.exists():  # an incomplete tree with the final name cannot happen, but never trust it
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _customise(root: Path, mirror: str, packages: tuple[str, ...]) -> None:
    """Make the tree a good template for many hosts: no identity, fast boot, key-only root SSH."""
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()  # each host gets its own host keys at `lab up`
    (root / "etc/machine-id").write_text("")  # each host gets its own machine-id at `lab up`
    dbus_id = root / "var/lib/dbus/machine-id"
    if dbus_id.exists() and not dbus_id.is_symlink():
        dbus_id.unlink()
    systemd_dir = root / "etc/systemd/system"
    for unit in MASKED_UNITS:
        link = systemd_dir / unit
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to("/dev/null")
    (root / "etc/ssh/sshd_config.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/ssh/sshd_config.d/meshctl-lab.conf").write_text(SSHD_CONFIG)
    (root / "etc/apt/sources.list").write_text(f"deb {mirror} {SUITE} main\n")
    # the lab has no DNS; an empty resolv.conf keeps tools from waiting on a resolver that is not there
    resolv = root / "etc/resolv.conf"
    if resolv.exists() or resolv.is_symlink():
        resolv.unlink()
    resolv.write_text("")
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    try:
        version = run(["chroot", str(root), "python3", "-c", "import venv, ensurepip; print('ok')"]).strip()
    except LabCommandError as err:
        raise RootfsBuildError(f"python3-venv does not work in the built rootfs: {err}") from err
    if version != "ok":
        raise RootfsBuildError(f"python3-venv check printed {version!r}, wanted 'ok'")
    (root / ".meshctl-rootfs").write_text(
        f"key={rootfs_key(packages)}\nsuite={SUITE}\nmirror={mirror}\npackages={','.join(sorted(set(packages)))}\n"
    )
