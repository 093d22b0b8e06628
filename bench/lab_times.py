"""Benchmark: how long `meshctl lab` takes (rootfs cached/cold, up for 5 and 10 hosts, down) and how much
memory a host uses. Ratios are against the smallest lab (2 hosts) brought up in the same run.

    .venv/bin/python bench/lab_times.py            # cached rootfs, 2/5/10 hosts (about 20 s)
    .venv/bin/python bench/lab_times.py --cold     # also a cold debootstrap into a scratch cache (about 1 min)
    .venv/bin/python bench/lab_times.py --sizes 5,10,20

Needs root; skips (exit 0 with a message) otherwise. Uses its own lab names (benchN), torn down at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from meshctl.lab import LabError, LabState, Nat, check_prerequisites, down, ensure_rootfs, up
from meshctl.lab.cgroup import memory_peak_bytes
from meshctl.lab.host import processes_in_netns
from meshctl.lab.network import netns_inode


def memory_kib(state: LabState) -> dict[str, tuple[int, int]]:
    """Per host: (RSS, PSS) in KiB summed over the processes inside its network namespace (sampled)."""
    out: dict[str, tuple[int, int]] = {}
    for host in state.hosts:
        inode = netns_inode(host.netns)
        rss = pss = 0
        for pid in processes_in_netns(inode) if inode else []:
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
            except OSError:
                continue
        out[host.name] = (rss, pss)
    return out


def lab_for(size: int, name: str) -> tuple[float, float, dict[str, tuple[int, int]], list[int]]:
    nodes = max(1, size - 2)
    nat = {"node2": Nat.EASY} if nodes >= 3 else {}
    if nodes >= 3:
        nat["node3"] = Nat.HARD
    t = time.monotonic()
    state = up(name, nodes=nodes, derps=1 if size > 2 else 0, nat=nat)
    up_s = time.monotonic() - t
    peak: dict[str, tuple[int, int]] = {}
    for _ in range(10):  # sample while the hosts settle; keep the peak per host
        for host, (rss, pss) in memory_kib(state).items():
            old = peak.get(host, (0, 0))
            peak[host] = (max(old[0], rss), max(old[1], pss))
        time.sleep(0.3)
    # the kernel's own peak for each host's memory cgroup (processes plus the page cache they charged)
    cgroup_peaks = [p for p in (memory_peak_bytes(list(h.cgroups)) for h in state.hosts) if p is not None]
    t = time.monotonic()
    down(name)
    return up_s, time.monotonic() - t, peak, cgroup_peaks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5,10", help="lab sizes in hosts (comma separated)")
    parser.add_argument("--cold", action="store_true", help="also time a cold rootfs build (debootstrap)")
    args = parser.parse_args()
    try:
        check_prerequisites()
    except LabError as err:
        print(f"skip: {err}")
        return 0
    if args.cold:
        scratch = Path(tempfile.mkdtemp(prefix="meshctl-bench-rootfs-", dir="/var/cache/meshctl"))
        try:
            cold = ensure_rootfs(cache_dir=scratch)
            print(f"rootfs cold build: {cold.seconds:.1f}s")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    t = time.monotonic()
    cached = ensure_rootfs()
    print(f"rootfs cached:     {time.monotonic() - t:.3f}s ({'built now' if cached.built else 'reused'})")
    base_up, base_down, _, _ = lab_for(2, "bench2")
    print(f"baseline up 2 hosts: {base_up:.2f}s, down {base_down:.2f}s")
    for size in [int(s) for s in args.sizes.split(",")]:
        up_s, down_s, peak, cgroup_peaks = lab_for(size, f"bench{size}")
        rss = [r for r, _ in peak.values()]
        pss = [p for _, p in peak.values()]
        print(f"up {size:>2} hosts: {up_s:.2f}s ({up_s / base_up:.1f}x baseline)   down: {down_s:.2f}s "
              f"({down_s / base_down:.1f}x)   peak memory per host: RSS {max(rss) / 1024:.1f} MiB max "
              f"(mean {sum(rss) / len(rss) / 1024:.1f}), PSS {max(pss) / 1024:.1f} MiB max "
              f"(mean {sum(pss) / len(pss) / 1024:.1f})")
        if cgroup_peaks:
            print(f"   memory cgroup peak per host (incl. page cache): max {max(cgroup_peaks) / 2**20:.1f} MiB, "
                  f"mean {sum(cgroup_peaks) / len(cgroup_peaks) / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("skip: the lab benchmark needs root")
        sys.exit(0)
    sys.exit(main())
