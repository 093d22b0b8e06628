"""Benchmark: `meshctl deploy` on labs of N nodes — cold deploy, no-change re-run, and the floor.

The floor is an empty pyinfra run over the same hosts (connect, run zero operations, disconnect): what any
deploy pays before doing work. Printed per size: seconds for floor / cold / re-run, and the ratios
re-run/cold and deploy/floor; at the end how each grows with the host count. The wheelhouse is built before
timing (it is cached per source tree). Needs root (the lab). Default size 3 (about a minute and a half);
`--sizes 3,6,12` for the full curve.

    .venv/bin/python bench/deploy.py [--sizes 3,6,12] [--keep]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from meshctl.deploy import DeployOptions, build_wheelhouse, load_inventory, run_deploy
from meshctl.deploy.workspaces import resolve_workspace
from meshctl.lab import INVENTORY_PATH, Nat, check_prerequisites, down, up


def floor_seconds(spec) -> float:  # type: ignore[no-untyped-def]
    from pyinfra.api.config import Config
    from pyinfra.api.connect import connect_all, disconnect_all
    from pyinfra.api.operations import run_ops
    from pyinfra.api.state import State

    started = time.monotonic()
    inventory = spec.build(base_data={"ssh_user": "root"})
    state = State(inventory, Config(PARALLEL=len(spec.hosts), CONNECT_TIMEOUT=10))
    connect_all(state)
    run_ops(state)
    disconnect_all(state)
    return time.monotonic() - started


def one_size(n: int, keep: bool) -> dict[str, float]:
    name = f"bd{n}p{os.getpid() % 100000}"  # lab names: up to 12 lowercase letters/digits
    nat = {"node2": Nat.EASY} if n >= 2 else {}
    lab = up(name, nodes=n, derps=1, nat=nat)
    os.environ["MESHCTL_LAB"] = name
    try:
        spec = load_inventory(INVENTORY_PATH)
        ws = resolve_workspace(spec)
        wheelhouse = build_wheelhouse()
        floor = floor_seconds(spec)
        cold = run_deploy(spec, ws, wheelhouse, DeployOptions())
        rerun = run_deploy(spec, ws, wheelhouse, DeployOptions())
        if not cold.ok or not rerun.ok:
            failed = {h: cold.hosts[h].error for h in cold.failed}
            print(f"  n={n}: deploy FAILED on {failed}", file=sys.stderr)
        return {"hosts": len(lab.hosts), "floor": floor, "cold": cold.seconds, "rerun": rerun.seconds,
                "cold_changed": cold.changed, "rerun_changed": rerun.changed}
    finally:
        if not keep:
            down(name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3", help="node counts, comma-separated (default 3; full curve: 3,6,12)")
    parser.add_argument("--keep", action="store_true", help="leave the labs up")
    args = parser.parse_args()
    check_prerequisites()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    rows = []
    print(f"{'nodes':>5} {'hosts':>5} {'floor s':>8} {'cold s':>8} {'re-run s':>9} {'re/cold':>8} "
          f"{'cold/floor':>10} {'re/floor':>9} {'changed cold/re':>16}")
    for n in sizes:
        r = one_size(n, args.keep)
        rows.append((n, r))
        print(f"{n:>5} {r['hosts']:>5.0f} {r['floor']:>8.2f} {r['cold']:>8.2f} {r['rerun']:>9.2f} "
              f"{r['rerun'] / r['cold']:>8.2f} {r['cold'] / r['floor']:>10.1f} {r['rerun'] / r['floor']:>9.1f} "
              f"{r['cold_changed']:>8.0f}/{r['rerun_changed']:<7.0f}")
    if len(rows) > 1:
        (n0, a), (n1, b) = rows[0], rows[-1]
        print(f"growth {n0}->{n1} nodes (hosts x{b['hosts'] / a['hosts']:.1f}): floor x{b['floor'] / a['floor']:.2f}, "
              f"cold x{b['cold'] / a['cold']:.2f}, re-run x{b['rerun'] / a['rerun']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
