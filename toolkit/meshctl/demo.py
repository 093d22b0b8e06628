"""`make demo`: a whole mesh on the local lab — brought up, deployed, verified and shown. Run: python -m meshctl.demo

Steps (each is the command a user would type; the demo only chains them):
  1. `meshctl lab up` (1 control, 1 DERP, node1 public, node2 behind an easy NAT, node3 behind a hard NAT),
     unless that lab is already up;
  2. a workspace for the lab's mesh under the lab's state directory (once);
  3. `meshctl deploy -i inventories/lab.py`;
  4. `meshctl verify -i inventories/lab.py` when the verify command is available, else a ping matrix over SSH;
  5. the mesh: each node, its mesh address, its path to each peer (from `meshctl status --json` on the node).
A missing part prints one line saying which, and the demo exits non-zero.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .errors import MeshctlError

__all__ = ["main"]

console = Console(highlight=False, soft_wrap=True)


class DemoError(MeshctlError):
    """A part the demo needs is missing or a step failed."""


def _meshctl() -> list[str]:
    script = Path(sys.executable).parent / "meshctl"
    if script.is_file():
        return [str(script)]
    found = shutil.which("meshctl")
    if found:
        return [found]
    return [sys.executable, "-c", "from meshctl.cli.app import main; main()"]


def _lab_inventory() -> Path:
    from .lab import INVENTORY_PATH

    path = Path(INVENTORY_PATH)
    if not path.is_file():
        raise DemoError(f"the lab inventory {path} is missing", hint="reinstall meshctl")
    return path


def _step(title: str) -> None:
    console.print(f"\n[bold]== {title}[/bold]")


def _run(argv: list[str], env: dict[str, str], what: str) -> None:
    console.print("$ " + " ".join(["meshctl", *argv[len(_meshctl()):]]), markup=False, style="dim")
    proc = subprocess.run(argv, env=env, check=False)
    if proc.returncode != 0:
        raise DemoError(f"{what} failed (exit {proc.returncode}); see its output above")


def _workspace(lab_name: str, control_address: str, explicit: Path | None) -> Path:
    from .deploy.workspaces import lab_workspace

    if explicit is not None:
        return explicit
    ws = lab_workspace(lab_name, control_address)
    console.print(f"workspace: {ws.root} (control {ws.control_url})", markup=False)
    return ws.root


def _converge(lab_name: str) -> None:
    """Wait until every agent lists every peer, then send one ping per pair (handshakes happen on traffic)."""
    from .deploy.observe import mesh_ipv4, ping_matrix, wait_for_mesh
    from .lab import load_state

    lab = load_state(lab_name)
    nodes = [h.name for h in lab.by_role("node")]
    console.print(f"waiting for {len(nodes)} agents to see each other ...", markup=False)
    statuses = wait_for_mesh(lab, nodes, timeout=90)
    ping_matrix(lab, {n: ip for n, s in statuses.items() if (ip := mesh_ipv4(s))}, count=2)


def _verify(argv: list[str], env: dict[str, str], attempts: int = 6) -> None:
    """`meshctl verify`, retried a few times while the mesh settles; only the last report is shown."""
    console.print("$ " + " ".join(["meshctl", *argv[len(_meshctl()):]]), markup=False, style="dim")
    for attempt in range(1, attempts + 1):
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if proc.returncode == 0 or attempt == attempts:
            sys.stdout.write(proc.stdout)
            sys.stderr.write(proc.stderr)
            if proc.returncode != 0:
                raise DemoError(f"meshctl verify failed (exit {proc.returncode}); see its report above")
            return
        time.sleep(5)


def _show_mesh(lab_name: str) -> bool:
    from .deploy.observe import mesh_ipv4, ping_matrix, wait_for_mesh
    from .lab import load_state

    lab = load_state(lab_name)
    nodes = [h.name for h in lab.by_role("node")]
    statuses = wait_for_mesh(lab, nodes, timeout=90)
    addresses = {n: ip for n in nodes if n in statuses and (ip := mesh_ipv4(statuses[n]))}
    ok = len(addresses) == len(nodes)
    if importlib.util.find_spec("meshctl.verify") is None:
        _step("ping matrix (meshctl verify is not available)")
        results = ping_matrix(lab, addresses)
        for r in results:
            console.print(f"{r.src:>8} -> {r.dst:<8} {r.address:<16} {'ok' if r.ok else 'FAILED'}", markup=False)
        ok = ok and all(r.ok for r in results)
    _step("the mesh")
    nat = {h.name: h.nat.value for h in lab.hosts}
    table = Table()
    for col in ("node", "NAT", "mesh address", *[f"path to {n}" for n in nodes]):
        table.add_column(col)
    for n in nodes:
        peers = {str(p.get("name", "")).split(".")[0]: p for p in (statuses.get(n) or {}).get("peers") or []}
        cells = ["-" if m == n else str((peers.get(m) or {}).get("path") or "MISSING") for m in nodes]
        table.add_row(n, nat.get(n, "?"), addresses.get(n, "NO ADDRESS"), *cells)
    console.print(table)
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshctl.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default=os.environ.get("MESHCTL_LAB", "lab"), help="lab name (default: lab)")
    parser.add_argument("--workspace", type=Path, default=None, help="workspace (default: in the lab's state dir)")
    args = parser.parse_args(argv)
    try:
        return _demo(args.lab, args.workspace)
    except MeshctlError as err:
        console.print(f"demo: {err}" + (f" ({err.hint})" if err.hint else ""), markup=False, style="red")
        return 1


def _demo(lab_name: str, workspace: Path | None) -> int:
    if os.geteuid() != 0:
        raise DemoError("the lab needs root (systemd-nspawn, network namespaces)", hint="run: sudo make demo")
    for part, module in (("the lab (meshctl lab)", "meshctl.lab"), ("the deploy command", "meshctl.deploy"),
                         ("the node agent", "meshctl.agent"), ("the control server", "meshctl.control"),
                         ("the DERP server", "meshctl.derp")):
        if importlib.util.find_spec(module) is None:
            raise DemoError(f"{part} is missing from this installation ({module})")
    from .lab import LabNotRunningError, load_state

    env = {**os.environ, "MESHCTL_LAB": lab_name}
    meshctl = _meshctl()
    _step(f"lab {lab_name}")
    try:
        lab = load_state(lab_name)
        console.print(f"lab {lab_name} is already up ({len(lab.hosts)} hosts)", markup=False)
    except LabNotRunningError:
        _run([*meshctl, "lab", "up", "--name", lab_name, "--nodes", "3", "--derps", "1",
              "--nat", "node2=easy", "--nat", "node3=hard"], env, "meshctl lab up")
        lab = load_state(lab_name)
    control = lab.by_role("control")[0]
    ws = _workspace(lab_name, control.public_address, workspace)
    inventory = _lab_inventory()

    _step("deploy")
    _run([*meshctl, "deploy", "-i", str(inventory), "--workspace", str(ws)], env, "meshctl deploy")
    if importlib.util.find_spec("meshctl.verify") is not None:
        _step("verify")
        _converge(lab_name)
        _verify([*meshctl, "verify", "-i", str(inventory)], env)
    ok = _show_mesh(lab_name)

    _step("look around")
    console.print(f"  meshctl lab ssh node1 --name {lab_name} -- meshctl status      # a node's view of the mesh",
                  markup=False)
    console.print(f"  meshctl lab ssh node1 --name {lab_name} -- meshctl ping node3  # path and latency to a peer",
                  markup=False)
    console.print(f"  MESHCTL_LAB={lab_name} meshctl deploy -i {inventory} -w {ws}   # re-run: changes nothing",
                  markup=False)
    console.print(f"  meshctl lab down --name {lab_name}                              # tear everything down",
                  markup=False)
    if not ok:
        console.print("demo: the mesh is not complete (see MISSING / FAILED above)", markup=False, style="red")
        return 1
    console.print("\ndemo: ok", markup=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
