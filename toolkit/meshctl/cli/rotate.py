"""Command group `meshctl rotate`: deploy-key, node-keys (fleet), node-key (this host), derp-mesh-key.

Also registers `meshctl agent rotate --if-due` (the job `meshctl-rotate.timer` runs) on the agent group
when `meshctl.cli.agent` exposes `agent_app`; otherwise the same job is `meshctl rotate due`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError
from ..rotate.deploykey import created_comment, rotate_deploy_key
from ..rotate.errors import RotateError
from ..rotate.sshexec import SshRunner, SshTarget, shared_inventory_key, targets_from_inventory
from ..workspace import find_workspace
from .output import console, emit_json, err_console

__all__ = ["register", "rotate_app"]

rotate_app = typer.Typer(help="Rotate keys: deploy key, node keys, DERP mesh keys (never locking you out).",
                         no_args_is_help=True)

InventoryOpt = Annotated[Path, typer.Option("--inventory", "-i", help="pyinfra inventory file.")]
WorkspaceOpt = Annotated[Path | None, typer.Option("--workspace", help="Workspace directory.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON on stdout.")]


def _progress(host: str, step: str, outcome: str) -> None:
    err_console.print(f"{host:>16}  {step:<24} {outcome}", markup=False)


@rotate_app.command("deploy-key")
def deploy_key(
    inventory: InventoryOpt,
    workspace: WorkspaceOpt = None,
    key: Annotated[Path | None, typer.Option("--key", help="The deploy key to rotate (default: the inventory's "
                                                           "ssh_key, else the workspace's deploy key).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Add a new deploy key everywhere, verify a login with it everywhere, then remove the old one.

    If any host fails, nothing is removed anywhere and the failing hosts are named.
    """
    targets = targets_from_inventory(inventory)
    key = _deploy_key(targets, key, workspace)
    ws_name = "mesh"
    try:
        ws_name = find_workspace(workspace).name
    except ConfigError:  # a lab key outside any workspace is fine; the comment just says "mesh"
        pass
    result = rotate_deploy_key(targets, key, runner=SshRunner(), comment=created_comment(ws_name, time.time()),
                               progress=None if json_out else _progress)
    if json_out:
        emit_json({"key": result.key_path, "old": result.old_public, "new": result.new_public,
                   "hosts": list(result.hosts), "oldKeyLeftOn": result.old_key_left_on,
                   "complete": result.complete, "resumed": result.resumed, "seconds": round(result.seconds, 2)})
    else:
        console.print(f"deploy key {result.key_path} rotated on {len(result.hosts)} hosts in "
                      f"{result.seconds:.1f}s: {result.new_public.split()[1][-12:]} replaces "
                      f"{result.old_public.split()[1][-12:]}")
    if not result.complete:
        left = ", ".join(f"{h} ({why})" for h, why in sorted(result.old_key_left_on.items()))
        raise RotateError(f"the new key works everywhere, but the old key could not be removed on: {left}",
                          hint="re-run the same command to finish (the old key is kept as .old until then)")


def _deploy_key(targets: list[SshTarget], key: Path | None, workspace: Path | None) -> Path:
    """The key fleet commands log in with: --key, else the inventory's shared ssh_key, else the workspace's."""
    if key is not None:
        return key
    key_text = shared_inventory_key(targets)
    if key_text is None and any(t.inventory_key for t in targets):
        raise RotateError("the inventory's hosts name different ssh_key files; rotate them one key at a time",
                          hint="pass --key PATH and an inventory whose hosts all use that key")
    return Path(key_text) if key_text else find_workspace(workspace).deploy_key


@rotate_app.command("node-keys")
def node_keys(
    inventory: InventoryOpt,
    limit: Annotated[list[str] | None, typer.Option("--limit", help="Only these hosts or groups (repeat).")] = None,
    batch: Annotated[int, typer.Option("--batch", help="Nodes rotated at once.")] = 1,
    probe: Annotated[str | None, typer.Option("--probe", help="SRC,DST: ping DST's mesh address from SRC "
                                                              "throughout, and report lost probes.")] = None,
    workspace: WorkspaceOpt = None,
    key: Annotated[Path | None, typer.Option("--key", help="SSH key to log in with.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Rotate node keys across the fleet, a batch at a time, confirming that peers see each new key."""
    from ..rotate.nodekeys import rotate_node_keys

    targets = targets_from_inventory(inventory, limit, group="nodes")
    observers = [t for t in targets_from_inventory(inventory, None, group="nodes") if t not in targets]
    probe_pair: tuple[str, str] | None = None
    if probe:
        parts = probe.split(",")
        if len(parts) != 2:
            raise RotateError(f"--probe {probe!r}: want SRC,DST (two node names)")
        probe_pair = (parts[0].strip(), parts[1].strip())
    result = rotate_node_keys(targets, _deploy_key(targets, key, workspace), runner=SshRunner(), batch_size=batch,
                              probe=probe_pair, observers=observers, progress=None if json_out else _progress)
    data = {
        "seconds": round(result.seconds, 2),
        "batches": [{"hosts": list(b.hosts), "seconds": round(b.seconds, 2),
                     "confirmSeconds": round(b.confirm_seconds, 2), "observer": b.observer,
                     "newKeys": b.new_keys, "lostProbes": b.lost_probes if result.probe else None,
                     "recoveredSeconds": None if b.recovered_seconds is None else round(b.recovered_seconds, 2)}
                    for b in result.batches],
        "probe": None if result.probe is None else {
            "source": result.probe.source, "target": result.probe.target, "address": result.probe.address,
            "sent": result.probe.sent, "received": result.probe.received, "lost": result.probe.lost},
    }
    if json_out:
        emit_json(data)
        return
    for i, b in enumerate(result.batches, 1):
        lost = f", {b.lost_probes} probes lost" if result.probe else ""
        console.print(f"batch {i}: {', '.join(b.hosts)} rotated in {b.seconds:.1f}s "
                      f"(peers confirmed after {b.confirm_seconds:.1f}s on {b.observer or 'no observer'}{lost})")
    if result.probe is not None:
        p = result.probe
        console.print(f"probe {p.source} -> {p.target} ({p.address}): {p.sent} sent, {p.lost} lost")


@rotate_app.command("derp-mesh-key")
def derp_mesh_key(
    inventory: InventoryOpt,
    region: Annotated[int, typer.Option("--region", help="DERP region id (900-999).")],
    overlap: Annotated[str, typer.Option("--overlap", help="How long both keys stay accepted after every "
                                                           "server dials with the new one.")] = "30s",
    workspace: WorkspaceOpt = None,
    key: Annotated[Path | None, typer.Option("--key", help="SSH key to log in with.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Rotate a region's DERP mesh key with an overlap window (servers accept old and new meanwhile)."""
    from ..rotate.meshkey import rotate_mesh_key
    from ..workspace import parse_duration

    targets = targets_from_inventory(inventory, group="derp", where={"derp_region": region})
    ws = find_workspace(workspace)
    ws_key = ws.secrets_dir / f"derp-mesh-{region}.key"
    if not ws_key.exists():
        raise RotateError(f"no mesh key for region {region} in {ws.secrets_dir}",
                          hint="a region gets one when deployed with two or more DERP servers")
    result = rotate_mesh_key(targets, _deploy_key(targets, key, workspace), ws_key, region, runner=SshRunner(),
                             overlap=parse_duration(overlap, "--overlap"), progress=None if json_out else _progress)
    if json_out:
        emit_json({"region": result.region, "servers": list(result.servers),
                   "phaseSeconds": {k: round(v, 2) for k, v in result.phase_seconds.items()}})
    else:
        console.print(f"region {region}: mesh key rotated on {', '.join(result.servers)} "
                      + " ".join(f"{k}={v:.1f}s" for k, v in result.phase_seconds.items()))


AgentConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Agent config (TOML).")]
PolicyOpt = Annotated[Path, typer.Option("--policy", help="Rotation policy on this host (TOML).")]
_AGENT_TOML = Path("/etc/meshctl/agent.toml")
_POLICY_TOML = Path("/etc/meshctl/rotation.toml")


@rotate_app.command("node-key")
def node_key(
    config: AgentConfigOpt = _AGENT_TOML,
    json_out: JsonOpt = False,
) -> None:
    """On a node: ask the running agent to rotate its node key now (peers keep talking across it)."""
    from ..agent import localclient
    from ..agent.config import load_config

    cfg = load_config(config)
    result = localclient.rotate_node_key(cfg.socket)
    if json_out:
        emit_json(result)
    else:
        console.print(f"node key rotated: {result.get('oldNodeKey')} -> {result.get('newNodeKey')}")


@rotate_app.command("host-cert")
def host_cert(
    config: AgentConfigOpt = _AGENT_TOML,
    force: Annotated[bool, typer.Option("--force", help="Renew even if not due.")] = False,
    validity: Annotated[str | None, typer.Option("--validity", help="Ask for this validity (e.g. 30d, 90s); "
                                                                     "control caps it.")] = None,
    policy_file: PolicyOpt = _POLICY_TOML,
    json_out: JsonOpt = False,
) -> None:
    """On a node: renew this host's SSH host certificate if due (or --force), install it, reload sshd."""
    import asyncio

    from ..agent.config import load_config
    from ..agent.sshcert import ensure_host_cert
    from ..rotate.hostjob import load_host_policy
    from ..workspace import parse_duration

    cfg = load_config(config)
    policy, host_validity = load_host_policy(policy_file)
    asked = parse_duration(validity, "--validity") if validity else host_validity
    out = asyncio.run(ensure_host_cert(cfg, policy.host_cert_renew_before, force=force, validity=asked))
    data = {"renewed": out.renewed, "due": out.due.due, "reason": out.due.reason, "validBefore": out.valid_before,
            "reloaded": out.reloaded}
    if json_out:
        emit_json(data)
    elif out.renewed:
        console.print(f"host certificate renewed ({out.due.reason if out.due.due else 'forced'}), valid until "
                      f"{out.valid_before}" + (f"; {out.reloaded} reloaded" if out.reloaded else ""))
    else:
        console.print(f"host certificate not due: {out.due.reason}")


def agent_rotate(
    if_due: Annotated[bool, typer.Option(
        "--if-due", help="Only what the policy says is due (the timer mode); else rotate everything.")] = False,
    config: AgentConfigOpt = _AGENT_TOML,
    policy_file: PolicyOpt = _POLICY_TOML,
    json_out: JsonOpt = False,
) -> None:
    """Rotate this node's key and renew its SSH host certificate (what meshctl-rotate.timer runs)."""
    import asyncio

    from ..agent.config import load_config
    from ..rotate.hostjob import load_host_policy, run_host_jobs

    cfg = load_config(config)
    policy, host_validity = load_host_policy(policy_file)
    lines = asyncio.run(run_host_jobs(cfg, policy, time.time(), if_due=if_due, host_cert_validity=host_validity))
    if json_out:
        emit_json([line.to_json() for line in lines])
    else:
        for line in lines:
            console.print(f"meshctl-rotate: {line}")
    failed = [line for line in lines if line.action == "failed"]
    if failed:
        raise RotateError(f"{len(failed)} rotation job(s) failed: " + "; ".join(str(f) for f in failed))


rotate_app.command("due")(agent_rotate)


def register(app: typer.Typer) -> None:
    """Attach this group's commands to the root app (and `rotate` to the agent group, if it exposes one)."""
    app.add_typer(rotate_app, name="rotate")
    from . import agent as agent_cli

    agent_app = getattr(agent_cli, "agent_app", None)
    if isinstance(agent_app, typer.Typer):
        agent_app.command("rotate")(agent_rotate)
