"""Kernel limits a lab can outgrow: inotify instances (`fs.inotify.max_user_instances`, per user).

Every host's systemd, dbus and logind hold about 7 inotify instances once booted and more while booting, and
all hosts run as the same root user, so the default limit of 128 runs out around ten hosts: systemd then
fails units ("Failed to create inotify object: Too many open files") and a host never reaches sshd. `up`
raises the limit when the lab would not fit, and says so (the same fix kind documents for its nodes).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["INSTANCES_PER_HOST", "ensure_inotify_instances", "inotify_instances_in_use", "needed_inotify_limit"]

MAX_USER_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")
INSTANCES_PER_HOST = 16  # measured: 7 once booted; twice that covers the boot transient
HEADROOM = 128
FLOOR = 1024


def inotify_instances_in_use(uid: int = 0) -> int:
    """inotify instances held by processes of `uid` (the limit is counted per user)."""
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            fd_dir = f"/proc/{entry.name}/fd"
            for fd in os.listdir(fd_dir):
                if os.readlink(f"{fd_dir}/{fd}") == "anon_inode:inotify":
                    count += 1
        except OSError:
            continue
    return count


def needed_inotify_limit(in_use: int, hosts: int, current: int) -> int | None:
    """The limit to set so `hosts` more hosts fit next to `in_use` instances, or None when `current` will do."""
    need = in_use + hosts * INSTANCES_PER_HOST + HEADROOM
    if current >= need:
        return None
    return max(need, FLOOR)


def ensure_inotify_instances(hosts: int) -> tuple[int, int] | None:
    """Raise the limit if `hosts` would not fit; return (old, new) when it was raised, None otherwise."""
    current = int(MAX_USER_INSTANCES.read_text())
    new = needed_inotify_limit(inotify_instances_in_use(), hosts, current)
    if new is None:
        return None
    MAX_USER_INSTANCES.write_text(f"{new}\n")
    return current, new
