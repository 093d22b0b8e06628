"""A cgroup of its own per lab host, in every mounted hierarchy, so hosts never share cgroup paths.

Without it every systemd-nspawn started with `--keep-unit` (needed where PID 1 is not systemd) sits in the
caller's cgroup, so the containers' systemds all create `system.slice/<unit>` in the same directories and
trip over each other while booting in parallel (units failing with status 219/CGROUP). Each host's group is
created below the caller's own group in each hierarchy (so the machine's limits still apply), entered by the
launcher before it execs systemd-nspawn, and removed, deepest first, by `down`. The memory hierarchy also
gives a host's peak memory use.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["create_host_cgroups", "launcher_argv", "memory_peak_bytes", "own_cgroups_named", "remove_cgroups"]

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _hierarchies() -> list[tuple[Path, str]]:
    """(mount point, this process's path in it) for every cgroup hierarchy mounted under /sys/fs/cgroup."""
    mounts: dict[str, Path] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype, _source, options = [*right.split(), "", "", ""][:3]
        point = Path(left.split()[4])
        if fstype == "cgroup2":
            mounts[""] = point
        elif fstype == "cgroup":
            for opt in options.split(","):
                if opt not in ("rw", "ro") and not opt.startswith("release_agent") and opt != "clone_children":
                    mounts.setdefault(opt, point)
    found: list[tuple[Path, str]] = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        key = controllers.split(",")[0] if controllers else ""
        if key in mounts:
            found.append((mounts[key], path))
    return found


def create_host_cgroups(lab: str, host: str) -> list[str]:
    """Create the host's cgroup in each hierarchy; return their directories (to enter, and to remove later)."""
    made: list[str] = []
    for point, path in _hierarchies():
        directory = point / path.lstrip("/") / f"mlab-{lab}-{host}"
        directory.mkdir(exist_ok=True)
        cpus = directory / "cpuset.cpus"
        if cpus.exists():  # a v1 cpuset group takes no task until it has CPUs and memory nodes
            for name in ("cpuset.cpus", "cpuset.mems"):
                (directory / name).write_text((directory.parent / name).read_text())
        made.append(str(directory))
    return made


def launcher_argv(cgroups: list[str], argv: list[str]) -> list[str]:
    """`argv`, run by a shell that first moves itself into `cgroups` (same PID after exec)."""
    script = (
        'for g in "$@"; do [ "$g" = -- ] && break; echo $$ > "$g/cgroup.procs" || exit 125; shift; done; '
        'shift; exec "$@"'
    )
    return ["sh", "-c", script, "mlab-launch", *cgroups, "--", *argv]


def own_cgroups_named(prefix: str) -> list[str]:
    """Groups named `prefix*` below this process's group in each hierarchy (what a crashed `up` may leave)."""
    found: list[str] = []
    for point, path in _hierarchies():
        found += [str(p) for p in (point / path.lstrip("/")).glob(f"{prefix}*") if p.is_dir()]
    return found


def memory_peak_bytes(cgroups: list[str]) -> int | None:
    """Peak memory use of the host's cgroup (v1 `memory.max_usage_in_bytes` or v2 `memory.peak`)."""
    for directory in cgroups:
        for name in ("memory.max_usage_in_bytes", "memory.peak"):
            path = Path(directory) / name
            if path.is_file():
                try:
                    return int(path.read_text().split()[0])
                except (OSError, ValueError):
                    continue
    return None


def remove_cgroups(cgroups: list[str]) -> list[str]:
    """Remove the host's cgroups and whatever groups its systemd left inside them; return what was removed."""
    removed: list[str] = []
    for directory in cgroups:
        top = Path(directory)
        if not top.is_dir() or not top.name.startswith("mlab-"):
            continue
        for root, dirs, _files in os.walk(top, topdown=False):
            for name in dirs:
                try:
                    os.rmdir(os.path.join(root, name))
                except OSError:
                    pass
        try:
            os.rmdir(top)
            removed.append(directory)
        except OSError:
            pass
    return removed
