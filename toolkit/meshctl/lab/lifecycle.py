"""Bringing a lab up and down: the order of operations, the clean-up, and the time per phase.

`up` is all-or-nothing: any failure runs `down` for the lab before the error propagates. `down` works from the
state file when there is one and from the lab's naming convention (namespaces `mlab-<lab>-…`, mounts under
its directory, its veth) when there is not, so it also clears what a crashed `up` left; running it twice is fine.
It ends only processes inside the lab's own namespaces, and the recorded systemd-nspawn PIDs only after checking
they still belong to the lab.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..workspace import generate_ssh_keypair
from .cgroup import own_cgroups_named, remove_cgroups
from .errors import LabConflictError, LabError, LabHostError, LabNotRunningError, LabPrerequisiteError
from .host import (
    BootedHost,
    boot_host,
    lab_mounts,
    pid_is_ours,
    prepare_host,
    processes_in_netns,
    signal_pids,
    unmount_all,
    wait_for_ssh,
    wait_gone,
)
from .limits import ensure_inotify_instances
from .network import create_network, delete_network, lab_namespaces, netns_inode, taken_networks
from .plan import LabPlan, Nat, choose_prefix, plan_lab, root_veth_name, validate_lab_name
from .rootfs import ensure_rootfs
from .state import LAB_ROOT, LabHost, LabState, lab_dir, load_state, save_state, state_path

__all__ = ["DownReport", "HostHealth", "check_prerequisites", "down", "health", "up"]

Progress = Callable[[str], None]
BOOT_TIMEOUT = 90.0
LOG_ROOT = Path("/var/log/meshctl")


def _quiet(_: str) -> None:
    pass


def _checked_name(name: str) -> str:
    try:
        return validate_lab_name(name)
    except ValueError as err:
        raise LabError(str(err)) from None


def check_prerequisites(*, need_debootstrap: bool = True) -> None:
    """Root on Linux, plus systemd-nspawn (and debootstrap): one error line naming the apt packages otherwise."""
    if os.geteuid() != 0:
        raise LabPrerequisiteError("the lab needs root (network namespaces, mounts, systemd-nspawn)",
                                   hint="run it as root, e.g. with sudo")  # fmt: skip
    missing = []
    if shutil.which("systemd-nspawn") is None:
        missing.append("systemd-container")
    if need_debootstrap and shutil.which("debootstrap") is None:
        missing.append("debootstrap")
    if missing:
        raise LabPrerequisiteError(f"missing tools for the lab (apt packages: {', '.join(missing)})",
                                   missing=tuple(missing), hint=f"apt-get install {' '.join(missing)}")  # fmt: skip
    if "overlay" not in Path("/proc/filesystems").read_text():
        raise LabPrerequisiteError("this kernel has no overlay filesystem (lab hosts are overlays on one rootfs)",
                                   hint="modprobe overlay")  # fmt: skip
    if not Path("/dev/net/tun").exists():
        raise LabPrerequisiteError("no /dev/net/tun (wireguard-go in lab hosts needs it)", hint="modprobe tun")


@contextmanager
def _machine_lock(root: Path, progress: Progress) -> Iterator[None]:
    # one lab operation at a time per machine: prefix choice and namespace names must not race
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress("waiting for another lab operation on this machine to finish")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@dataclass(frozen=True)
class HostHealth:
    name: str
    running: bool  # its recorded systemd-nspawn is alive and still the lab's


def health(state: LabState) -> list[HostHealth]:
    return [HostHealth(h.name, pid_is_ours(h.pid, h.pid_start, h.root_dir)) for h in state.hosts]


def _same_shape(state: LabState, plan: LabPlan) -> bool:
    want = {(h.name, h.role, h.nat) for h in plan.hosts}
    return want == {(h.name, h.role, h.nat) for h in state.hosts}


def _leftovers(name: str, root: Path) -> bool:
    return bool(lab_namespaces(f"mlab-{name}-") or lab_mounts(lab_dir(name, root)) or lab_dir(name, root).exists())


def up(
    name: str = "lab", *, nodes: int = 3, derps: int = 1, nat: Mapping[str, Nat] | None = None,
    progress: Progress = _quiet, root: Path = LAB_ROOT,
) -> LabState:  # fmt: skip
    """Bring the lab up (or return it when it is already up with this shape); see the module docstring."""
    _checked_name(name)
    try:
        plan_lab(name, "10.0.0", nodes=nodes, derps=derps, nat=nat)  # refuse a bad shape before touching anything
    except ValueError as err:
        raise LabError(str(err)) from None
    check_prerequisites()
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    rootfs = ensure_rootfs()
    timings["rootfs"] = round(time.monotonic() - t0, 2)
    progress(f"rootfs: {'built' if rootfs.built else 'cached'} {rootfs.path} ({timings['rootfs']:.1f}s)")
    with _machine_lock(root, progress):
        try:
            existing = load_state(name, root)
        except LabNotRunningError:
            existing = None
        except LabError:
            existing = None  # unreadable state: treat as half-dead below
        if existing is not None:
            shape = plan_lab(name, existing.prefix, nodes=nodes, derps=derps, nat=nat)
            # a state without hosts is the placeholder of an `up` that crashed: half-dead, like a stopped host
            running = bool(existing.hosts) and all(h.running for h in health(existing))
            if running and _same_shape(existing, shape):
                progress(f"lab {name!r} is already up with this shape")
                return existing
            if running:
                raise LabConflictError(f"lab {name!r} is up with another shape ({len(existing.hosts)} hosts)",
                                       hint=f"run: meshctl lab down --name {name}")  # fmt: skip
        if existing is not None or _leftovers(name, root):
            progress(f"lab {name!r}: clearing what a previous run left behind")
            _down_locked(name, root, progress)
        others = [p for p in root.glob("*/state.json") if p.parent.name != name]
        prefix = choose_prefix(name, taken_networks(others))
        plan = plan_lab(name, prefix, nodes=nodes, derps=derps, nat=nat)
        raised = ensure_inotify_instances(len(plan.hosts))
        if raised:
            progress(f"raised fs.inotify.max_user_instances from {raised[0]} to {raised[1]} "
                     "(each host's systemd needs several; the old limit would stall boots)")  # fmt: skip
        try:
            return _up_locked(plan, rootfs.path, root, timings, progress, t0)
        except BaseException:
            kept = _keep_console_logs(name, root)
            progress(f"lab {name!r}: up failed, removing everything it created"
                     + (f" (hosts' console logs kept in {kept})" if kept else ""))  # fmt: skip
            _down_locked(name, root, _quiet)
            raise


def _keep_console_logs(name: str, root: Path) -> Path | None:
    """Copy the hosts' console logs out of the lab before a failed `up` removes it (they say why)."""
    logs = sorted((lab_dir(name, root) / "hosts").glob("*/console.log"))
    if not logs:
        return None
    keep = LOG_ROOT / f"lab-{name}-{time.strftime('%Y%m%dT%H%M%S')}"
    keep.mkdir(parents=True, exist_ok=True)
    for log in logs:
        shutil.copyfile(log, keep / f"{log.parent.name}.console.log")
    return keep


def _up_locked(plan: LabPlan, rootfs: Path, root: Path, timings: dict[str, float], progress: Progress,
               t0: float) -> LabState:  # fmt: skip
    directory = lab_dir(plan.name, root)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    # a placeholder state first, so the prefix is claimed and `down` knows the lab even if we crash
    key = directory / "id_ed25519"
    known_hosts = directory / "known_hosts"
    state = LabState(plan.name, plan.prefix, str(key), str(known_hosts), str(state_path(plan.name, root)), (),
                     str(rootfs), timings)  # fmt: skip
    save_state(state, root)
    public_key = generate_ssh_keypair(key, f"meshctl-lab-{plan.name}")

    t = time.monotonic()
    create_network(plan)
    timings["network"] = round(time.monotonic() - t, 2)
    progress(f"network: {plan.network} on bridge namespace {plan.bridge_netns} ({timings['network']:.1f}s)")

    t = time.monotonic()
    etc_hosts = "".join(f"{h.public_address}\t{h.name}\n" for h in plan.hosts)
    with ThreadPoolExecutor(max_workers=8) as pool:
        prepared = list(pool.map(
            lambda h: prepare_host(h, directory / "hosts" / h.name, rootfs, public_key, etc_hosts), plan.hosts
        ))  # fmt: skip
    known_hosts.write_text("".join(f"{p.plan.ssh_hostname} {p.host_key_line}\n" for p in prepared))
    timings["overlays"] = round(time.monotonic() - t, 2)
    progress(f"overlays: {len(prepared)} hosts ({timings['overlays']:.1f}s)")

    t = time.monotonic()
    booted: list[BootedHost] = []
    try:
        for p in prepared:
            booted.append(boot_host(p, plan.name, directory / "hosts" / p.plan.name / "console.log"))
    finally:
        state = _state_of(plan, state, booted)
        save_state(state, root)
    deadline = time.monotonic() + BOOT_TIMEOUT
    with ThreadPoolExecutor(max_workers=len(booted)) as pool:
        list(pool.map(lambda b: _await_host(state, b, deadline), booted))
    timings["boot"] = round(time.monotonic() - t, 2)
    progress(f"boot: {len(booted)} hosts booted, sshd answering with the lab key ({timings['boot']:.1f}s)")
    timings["total"] = round(time.monotonic() - t0, 2)
    state = LabState(**{**state.__dict__, "timings": timings})
    save_state(state, root)
    return state


def _state_of(plan: LabPlan, base: LabState, booted: list[BootedHost]) -> LabState:
    hosts = tuple(
        LabHost(
            name=b.prepared.plan.name, role=b.prepared.plan.role, address=b.prepared.plan.address,
            public_address=b.prepared.plan.public_address, ssh_hostname=b.prepared.plan.ssh_hostname,
            ssh_port=b.prepared.plan.ssh_port, nat=b.prepared.plan.nat, pid=b.pid, pid_start=b.pid_start,
            machine_id=b.prepared.machine_id, netns=b.prepared.plan.netns, router_netns=b.prepared.plan.router_netns,
            root_dir=str(b.prepared.root_dir), cgroups=b.cgroups,
        )
        for b in booted
    )  # fmt: skip
    return LabState(**{**base.__dict__, "hosts": hosts})


def _await_host(state: LabState, booted: BootedHost, deadline: float) -> None:
    host = state.host(booted.prepared.plan.name)
    try:
        wait_for_ssh(host.ssh_hostname, host.ssh_port, deadline)
    except LabHostError as err:
        if not pid_is_ours(booted.pid, booted.pid_start, host.root_dir):
            log = Path(host.root_dir).parent / "console.log"
            raise LabHostError(f"{host.name}: systemd-nspawn exited while booting", host=host.name,
                               hint=f"see {log}") from err  # fmt: skip
        raise LabHostError(f"{host.name}: {err}", host=host.name) from err
    # the banner alone is not enough: prove the lab key and the recorded host key work end to end
    proc = state.run(host, "true", timeout=max(5.0, deadline - time.monotonic()))
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise LabHostError(f"{host.name}: SSH with the lab key failed: {detail}", host=host.name)


@dataclass
class DownReport:
    name: str
    stopped: list[str] = field(default_factory=list)
    killed: list[int] = field(default_factory=list)
    unmounted: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    seconds: float = 0.0


def down(name: str = "lab", *, progress: Progress = _quiet, root: Path = LAB_ROOT) -> DownReport:
    """Remove every process, mount, namespace, link and file of the lab; a lab that is not there is fine."""
    _checked_name(name)
    check_prerequisites(need_debootstrap=False)
    with _machine_lock(root, progress):
        return _down_locked(name, root, progress)


def _down_locked(name: str, root: Path, progress: Progress) -> DownReport:
    t = time.monotonic()
    report = DownReport(name)
    try:
        state: LabState | None = load_state(name, root)
    except LabError:
        state = None
    # 1. ask each container's systemd to power off (SIGTERM to systemd-nspawn), only if the PID is still ours
    recorded = [h for h in (state.hosts if state else ()) if pid_is_ours(h.pid, h.pid_start, h.root_dir)]
    signal_pids((h.pid for h in recorded), signal.SIGTERM)
    wait_gone([(h.pid, h.pid_start) for h in recorded], timeout=8.0)
    report.stopped = [h.name for h in recorded]
    # 2. whatever still runs inside the lab's namespaces is the lab's (nothing else joins them): kill it
    namespaces = lab_namespaces(f"mlab-{name}-")
    for _ in range(3):
        leftovers = []
        for netns in namespaces:
            inode = netns_inode(netns)
            if inode is not None:
                leftovers += processes_in_netns(inode)
        leftovers = [p for p in leftovers if p != os.getpid()]
        if not leftovers:
            break
        signal_pids(leftovers, signal.SIGKILL)
        report.killed += leftovers
        time.sleep(0.2)
    for h in recorded:  # a systemd-nspawn stuck past SIGTERM and outside the namespace
        if pid_is_ours(h.pid, h.pid_start, h.root_dir):
            signal_pids([h.pid], signal.SIGKILL)
            report.killed.append(h.pid)
    # 3. cgroups, mounts, then namespaces and links, then files
    recorded_groups = [g for h in (state.hosts if state else ()) for g in h.cgroups]
    groups = recorded_groups + [g for g in own_cgroups_named(f"mlab-{name}-") if g not in recorded_groups]
    report.removed += [f"cgroup {g}" for g in remove_cgroups(groups)]
    directory = lab_dir(name, root)
    report.unmounted = unmount_all(directory)
    report.removed += delete_network(f"mlab-{name}-", root_veth_name(name))
    remaining = lab_mounts(directory)
    if remaining:
        raise LabError(f"lab {name!r}: {remaining[0]} is still mounted; refusing to delete {directory}",
                       hint=f"umount {remaining[0]} and run meshctl lab down --name {name} again")  # fmt: skip
    if directory.exists():
        shutil.rmtree(directory)
        report.removed.append(f"dir {directory}")
    report.seconds = round(time.monotonic() - t, 2)
    progress(f"down: {len(report.stopped)} hosts stopped, {len(report.unmounted)} overlays unmounted, "
             f"{len(report.removed)} namespaces/links/cgroups/dirs removed ({report.seconds:.1f}s)")  # fmt: skip
    return report


